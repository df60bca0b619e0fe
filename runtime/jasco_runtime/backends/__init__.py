"""Inference backends.  Each one imports its library lazily, so ``jasco_runtime`` imports with numpy only."""
from __future__ import annotations

import importlib.util
import sys
import typing as tp

from .. import signals
from ..errors import InputError, first_line
from ..export_folder import Backend
from .base import Engine, run_chunked

if tp.TYPE_CHECKING:  # pragma: no cover
    from ..export_folder import ArtifactKey, ExportFolder

BACKENDS = tuple(Backend.choices("auto"))


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> tp.List[str]:
    """Backends whose library can be imported here (without importing it)."""
    return [b.value for b in Backend if _importable(b.value)]  # each backend's name is its Python module's


def tensorrt_unavailable_reason() -> tp.Optional[str]:
    """None when the TensorRT backend can run here (tensorrt 10.x/11.x and cuda-python import, a CUDA device
    answers), else why not — ``auto`` uses TensorRT only then.  (polygraphy is needed to build engines only.)"""
    from ..tensorrt.device import cudart, gpu_unavailable_reason
    from ..tensorrt.versions import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
        cudart()
    except TensorRTUnavailable as exc:
        return str(exc)
    return gpu_unavailable_reason()


def open_engine(folder: "ExportFolder", key: "ArtifactKey", providers: tp.Optional[tp.Sequence[str]] = None,
                threads: tp.Optional[int] = None) -> Engine:
    """Open artifact ``key`` of an export folder on its backend.  The runtime, the parity gate,
    ``verify`` and the benchmarks all open artifacts here (so the "built on this GPU" check always runs)."""
    path = folder.path(key)
    if key.runtime is Backend.TENSORRT:
        from .tensorrt_backend import TensorRTEngine

        engine: Engine = TensorRTEngine(path, key.graph, folder.built_on)
    else:
        from .onnxruntime_backend import OnnxRuntimeEngine, cuda_ep_options, tensorrt_ep_options

        signals_before = signals.received()
        try:
            engine = OnnxRuntimeEngine(path, key.graph, providers, threads=threads,
                                       tensorrt_options=lambda: tensorrt_ep_options(folder, key),
                                       max_batch=folder.graphs[key.graph].max_size("batch"),
                                       cuda_options=cuda_ep_options(key))
        except InputError:
            raise
        except Exception as exc:  # onnxruntime's InvalidProtobuf / Fail / InvalidGraph ...
            if signals.received() != signals_before:  # ONNX Runtime swallowed a Ctrl-C/SIGTERM: "initialization
                raise signals.exception_for(signals.last_signal()) from exc  # failed" is then an interrupt (S02)
            detail = first_line(exc, limit=300)
            raise InputError(f"ONNX Runtime cannot load {path} ({detail}); the file is damaged or not an ONNX graph "
                             "— re-run jasco-export or copy the folder again") from exc
    try:
        check_io(folder, key, engine, path)
    except BaseException:
        engine.close()  # a TensorRT engine holds device memory until closed
        raise
    return engine


def check_io(folder: "ExportFolder", key: "ArtifactKey", engine: Engine, path: tp.Any) -> None:
    """The opened graph must have the inputs and outputs the manifest declares for ``key.graph``: a file
    swapped for another graph (or another model's) fails here, not in the middle of a generation."""
    declared = folder.graphs[key.graph]
    want_in, want_out = declared.input_names, declared.output_names
    if set(engine.input_names) != set(want_in) or not set(want_out) <= set(engine.output_names):
        raise InputError(f"{path} is not the {key.graph} graph the manifest declares (inputs {sorted(engine.input_names)}, "
                         f"outputs {sorted(engine.output_names)}; expected inputs {sorted(want_in)}, outputs "
                         f"{sorted(want_out)}) — re-run jasco-export or copy the folder again")


__all__ = ["Engine", "run_chunked", "open_engine", "check_io", "available_backends", "tensorrt_unavailable_reason", "BACKENDS"]
