"""Inference backends.  Each one imports its library lazily, so ``jasco_runtime`` imports with numpy only."""
from __future__ import annotations

import importlib.util
import sys
import typing as tp

from ..errors import InputError
from .base import Engine

if tp.TYPE_CHECKING:  # pragma: no cover
    from ..export_folder import ArtifactKey, ExportFolder

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> tp.List[str]:
    """Backends whose library can be imported here (without importing it)."""
    return [name for name, module in (("onnxruntime", "onnxruntime"), ("tensorrt", "tensorrt")) if _importable(module)]


def tensorrt_unavailable_reason() -> tp.Optional[str]:
    """None when the TensorRT backend can run here (tensorrt 10.x and polygraphy>=0.53 import, a CUDA device
    answers), else why not — ``auto`` uses TensorRT only then."""
    from ..tensorrt.device import gpu_unavailable_reason
    from ..tensorrt.versions import TensorRTUnavailable, require_polygraphy, require_tensorrt

    try:
        require_tensorrt()
        require_polygraphy()
    except TensorRTUnavailable as exc:
        return str(exc)
    return gpu_unavailable_reason()


def open_engine(folder: "ExportFolder", key: "ArtifactKey", providers: tp.Optional[tp.Sequence[str]] = None,
                threads: tp.Optional[int] = None) -> Engine:
    """Open artifact ``key`` of an export folder on its backend.  The runtime, the parity gate,
    ``verify`` and the benchmarks all open artifacts here (so the "built on this GPU" check always runs)."""
    path = folder.path(key)
    if key.backend == "tensorrt":
        from .tensorrt_backend import TensorRTEngine

        return TensorRTEngine(path, key.graph, folder.built_on)
    from .onnxruntime_backend import OnnxRuntimeEngine, tensorrt_ep_options

    return OnnxRuntimeEngine(path, key.graph, providers, threads=threads,
                             tensorrt_options=lambda: tensorrt_ep_options(folder, key))


__all__ = ["Engine", "open_engine", "available_backends", "tensorrt_unavailable_reason", "BACKENDS"]
