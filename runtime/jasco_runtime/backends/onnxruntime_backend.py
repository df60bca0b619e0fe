"""ONNX Runtime engine (CPU, CUDA or TensorRT execution providers).

ONNX Runtime does not fail when a GPU provider cannot start (missing CUDA/cuDNN libraries, a driver too
old): it logs "Failed to create CUDAExecutionProvider" and runs on the CPU.  So after creating the session
the providers it really uses (``session.get_providers()``) are compared with the request: an explicit
``cuda``/``tensorrt`` request that did not start is an error; ``auto`` warns and falls back.

The CUDA execution provider gets ``use_tf32=0`` (it enables TF32 by default, ``cuda_execution_provider_info.h``;
the fp32 graphs and the fp32 islands of the mixed graphs stay fp32, as the TensorRT builder clears TF32) and,
for the decoder whose ``frames`` axis changes with the song length, the heuristic cuDNN convolution search
instead of the default exhaustive one (which would search again at every new length).

The TensorRT execution provider is configured from the manifest: fp16 for the mixed-fp16 graphs (layer norms
kept fp32), the graph's optimisation profile, engine and timing caches under the export folder (so engines
are not rebuilt per session or per shape), CUDA then CPU as fallbacks for nodes TensorRT does not take.
It is **TensorRT 10 only** (onnxruntime-gpu 1.31 links ``libnvinfer.so.10``) and **weakly typed**: with
``trt_fp16_enable`` TensorRT may run the exported fp32 islands (Softmax, the T5 feed-forward) in fp16 too.
``verify`` therefore checks its artifacts against the fp32 CPU reference; for fp16 prefer the native, strongly
typed TensorRT backend (``--backend tensorrt``).
"""
from __future__ import annotations

import contextlib
import logging
import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import DeviceArray, Engine, HostWorkspace, Traffic, Workspace, check_write, host_binding, run_on_host

if tp.TYPE_CHECKING:  # pragma: no cover
    from ..export_folder import ArtifactKey, ExportFolder

logger = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
ORT_TRT_CACHE = "ort-trt-cache"


def resolve_providers(providers: tp.Optional[tp.Sequence[str]]) -> tp.List[str]:
    """Map short names (cpu/cuda/tensorrt) to ORT provider names and check they are in this build.
    None/empty = auto: CUDA when this onnxruntime has it, then CPU.  TensorRT gets CUDA then CPU as fallbacks."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not providers:
        return [p for p in (CUDA, CPU) if p in available]
    out: tp.List[str] = []
    for p in providers:
        full = PROVIDER_ALIASES.get(p.lower(), p)
        if full not in available:
            raise InputError(f"ONNX Runtime provider {p!r} is not available here (available: {available}); "
                             "install onnxruntime-gpu for cuda/tensorrt or use --provider cpu")
        out.append(full)
    fallbacks = [CUDA] if TENSORRT in out and CUDA in available else []
    return out + [p for p in fallbacks + [CPU] if p not in out]


def cuda_ep_options(key: tp.Optional["ArtifactKey"] = None) -> tp.Dict[str, str]:
    """CUDA execution provider options: TF32 off for every graph; heuristic cuDNN search for the decoder's
    dynamic-length convolutions."""
    opts = {"use_tf32": "0"}
    if key is not None and key.graph == "encodec_decoder":
        opts["cudnn_conv_algo_search"] = "HEURISTIC"
    return opts


def tensorrt_ep_options(folder: "ExportFolder", key: "ArtifactKey") -> tp.Dict[str, str]:
    """TensorRT execution provider options for artifact ``key`` from the manifest."""
    from ..tensorrt.profiles import ort_profile_options, profile_shapes

    cache = folder.folder / ORT_TRT_CACHE
    cache.mkdir(exist_ok=True)
    fp16 = key.precision == "fp16"
    return {"trt_fp16_enable": str(fp16), "trt_layer_norm_fp32_fallback": str(fp16),
            "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
            **ort_profile_options(profile_shapes(folder.graphs[key.graph]))}


class CudaWorkspace(Workspace):
    """Device arrays of one loop as ``OrtValue``s on CUDA (freed with the workspace; ONNX Runtime returns them to
    its arena); calls bind them by address through IOBinding.  Sessions' calls are ordered because
    ``run_with_iobinding`` synchronises its stream before returning (ONNX Runtime's default, which this project
    never turns off)."""

    def __init__(self, owner: "OnnxRuntimeEngine"):
        self.owner = owner
        self.values: tp.List[tp.Any] = []

    def _wrap(self, value: tp.Any, dtype: np.dtype) -> DeviceArray:
        self.values.append(value)
        self.owner.traffic.allocations += 1
        return DeviceArray(value, int(value.data_ptr()), tuple(int(d) for d in value.shape()), np.dtype(dtype))

    def empty(self, shape: tp.Sequence[int], dtype: tp.Any = np.float32) -> DeviceArray:
        import onnxruntime as ort

        shape = [int(d) for d in shape]
        return self._wrap(ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(dtype).type, "cuda", 0), dtype)

    def upload(self, array: np.ndarray) -> DeviceArray:
        import onnxruntime as ort

        host = np.ascontiguousarray(array)
        self.owner.traffic.h2d += host.nbytes
        return self._wrap(ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0), host.dtype)

    def write(self, array: DeviceArray, host: np.ndarray) -> None:
        if array.ptr != int(array.memory.data_ptr()) or tuple(array.memory.shape()) != array.shape:
            raise ValueError("write a whole workspace array, not a view of one")
        check_write(array, host)
        array.memory.update_inplace(host)  # a copy into the OrtValue's own device memory
        self.owner.traffic.h2d += host.nbytes

    def download(self, array: DeviceArray) -> np.ndarray:
        if array.ptr != int(array.memory.data_ptr()):
            raise ValueError("download a whole workspace array, not a view of one")
        out = np.array(array.memory.numpy(), copy=True)  # a host OrtValue's numpy() is a view of its memory
        self.owner.traffic.d2h += out.nbytes
        return out

    def synchronize(self) -> None:
        pass  # run_with_iobinding synchronises the session's stream when it returns (ONNX Runtime's default)

    def close(self) -> None:
        self.values.clear()


class OnnxRuntimeEngine(Engine):
    """An ``onnxruntime.InferenceSession`` with name-keyed numpy I/O.

    On CUDA, :meth:`bind` puts arrays on the device once (``OrtValue``) and :meth:`run` binds them through
    IOBinding, so an ODE solve does not copy its conditions through host memory at every step.
    ``max_batch`` is the graph's declared profile (ONNX Runtime takes any batch; the TensorRT execution provider
    and the parity gate use that profile).
    """

    def __init__(self, path: Path, name: str, providers: tp.Optional[tp.Sequence[str]] = None,
                 threads: tp.Optional[int] = None,
                 tensorrt_options: tp.Optional[tp.Callable[[], tp.Dict[str, str]]] = None,
                 max_batch: tp.Optional[int] = None, cuda_options: tp.Optional[tp.Dict[str, str]] = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise InputError(f"graph file {path} is missing; re-run jasco-export")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.name = name
        requested = resolve_providers(providers)
        cuda = cuda_ep_options() if cuda_options is None else cuda_options
        with_options = [(p, tensorrt_options()) if p == TENSORRT and tensorrt_options
                        else (p, dict(cuda)) if p == CUDA and cuda else p for p in requested]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=with_options)
        self.providers = list(self.session.get_providers())
        wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers] if providers else requested[:1]
        if TENSORRT in wanted and CUDA in requested and CUDA not in wanted:
            wanted.append(CUDA)  # the nodes TensorRT does not take must not fall to the CPU silently
        self._check_providers(wanted, explicit=bool(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.whole_inputs = frozenset(i.name for i in self.session.get_inputs() if not i.shape or isinstance(i.shape[0], int))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = "cpu" if self.providers[0] == CPU else "cuda"
        self.max_batch = max_batch
        self.traffic = Traffic()

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    def _check_providers(self, wanted: tp.Sequence[str], explicit: bool) -> None:
        """Every GPU provider asked for must be among those ONNX Runtime really started (its fallbacks —
        CUDA behind TensorRT, CPU — need not be)."""
        failed = [p for p in wanted if p != CPU and p not in self.providers]
        if not failed:
            return
        what = (f"ONNX Runtime could not start {failed[0]} for {self.name} (it runs on {self.providers[0]}): "
                "the CUDA/cuDNN libraries onnxruntime-gpu needs did not load "
                "(with onnxruntime >= 1.21 `python -c \"import onnxruntime as o; o.preload_dlls(); "
                "print(o.get_available_providers())\"` shows why)")
        if explicit:
            raise InputError(f"{what}; fix the CUDA install or use --provider cpu")
        logger.warning("%s; falling back to %s", what, self.providers[0])

    def run(self, feeds: tp.Mapping[str, tp.Any]) -> tp.Dict[str, np.ndarray]:
        if self.session is None:
            raise RuntimeError(f"{self.name}: the engine was closed")
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        if any(not isinstance(feeds[k], np.ndarray) for k in self.input_names):  # device handles from bind()
            outs = {k: v.numpy() for k, v in self.run_bound(feeds, outputs_on="cpu").items()}
            self.traffic.d2h += sum(o.nbytes for o in outs.values())
            return outs
        arrays = {k: np.ascontiguousarray(feeds[k]) for k in self.input_names}
        outs = self.session.run(self.output_names, arrays)
        if self.on_gpu:  # the session copies host inputs in and the outputs back
            self.traffic.h2d += sum(a.nbytes for a in arrays.values())
            self.traffic.d2h += sum(o.nbytes for o in outs)
        return dict(zip(self.output_names, outs))

    def bind(self, arrays: tp.Mapping[str, np.ndarray]) -> tp.ContextManager[tp.Dict[str, tp.Any]]:
        """On CUDA: ``OrtValue`` device copies (freed with their last reference, at the end of the block)."""
        if not self.on_gpu:
            return host_binding(arrays)
        return self._device_binding(arrays)

    @contextlib.contextmanager
    def _device_binding(self, arrays: tp.Mapping[str, np.ndarray]) -> tp.Iterator[tp.Dict[str, tp.Any]]:
        bound = {k: self.to_device(v) for k, v in arrays.items()}
        try:
            yield bound
        finally:
            bound.clear()

    def workspace(self) -> Workspace:
        """Host arrays on the CPU provider; ``OrtValue``s on CUDA."""
        return HostWorkspace() if not self.on_gpu else CudaWorkspace(self)

    def run_device(self, inputs: tp.Mapping[str, DeviceArray], outputs: tp.Mapping[str, DeviceArray],
                   workspace: Workspace) -> None:
        """CPU: run on the host arrays and write the outputs in place.  CUDA: bind every array by its address
        (IOBinding), so inputs are read and outputs written where they are."""
        if self.session is None:
            raise RuntimeError(f"{self.name}: the engine was closed")
        if not self.on_gpu:
            run_on_host(self, inputs, outputs)
            return
        binding = self.session.io_binding()
        for names, bind, arrays in ((self.input_names, binding.bind_input, inputs),
                                    (self.output_names, binding.bind_output, outputs)):
            for k in names:
                a = arrays[k]
                bind(k, "cuda", 0, a.dtype.type, list(a.shape), a.ptr)
        self.session.run_with_iobinding(binding)

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees its memory with it)."""
        self.session = None

    # -- device-resident path (CUDA) -------------------------------------------------------------
    def to_device(self, array: np.ndarray):
        import onnxruntime as ort

        array = np.ascontiguousarray(array)
        self.traffic.h2d += array.nbytes
        self.traffic.allocations += 1
        return ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)

    def run_bound(self, inputs: tp.Mapping[str, tp.Any], outputs_on: str = "cuda") -> tp.Dict[str, tp.Any]:
        """Run with IOBinding; inputs may be OrtValues already on the device.  Outputs stay on ``outputs_on``."""
        binding = self.session.io_binding()
        for k in self.input_names:
            v = inputs[k]
            if isinstance(v, np.ndarray):
                v = self.to_device(v)
            binding.bind_ortvalue_input(k, v)
        for k in self.output_names:
            binding.bind_output(k, outputs_on, 0)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.get_outputs()))
