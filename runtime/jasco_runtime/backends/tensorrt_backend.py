"""TensorRT engine through the ``tensorrt`` runtime and polygraphy's CUDA helpers (no torch).

Written against the TensorRT 10 API (named I/O tensors, ``execute_async_v3``). Engines are not
portable: a plan built for another GPU or TensorRT version is refused with a "rebuild with
jasco-export" message, from the manifest's record before deserialising and from TensorRT itself after.

Like the ONNX Runtime CUDA path, ``to_device`` / ``run_bound`` let the ODE loop keep the condition
tensors on the GPU for a whole solve; only z and v cross host memory per evaluation.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError

REBUILD = "rebuild the engines on this machine with `jasco-export --model ... --backend trt`"


def check_engine_device(expected: tp.Optional[tp.Mapping[str, tp.Any]], trt_version: str,
                        gpu_name: tp.Optional[str], compute_capability: tp.Optional[str]) -> None:
    """Refuse an engine the manifest says was built for another TensorRT version or GPU."""
    if not expected:
        return
    built_trt = expected.get("trt_version")
    if built_trt and built_trt != trt_version:
        raise InputError(f"the TensorRT engines were built with TensorRT {built_trt}, this machine has {trt_version}; {REBUILD}")
    built_cc = expected.get("compute_capability")
    if built_cc and compute_capability and str(built_cc) != str(compute_capability):
        raise InputError(f"the TensorRT engines were built for {expected.get('gpu_name', 'another GPU')} (sm {built_cc}), "
                         f"this GPU is {gpu_name} (sm {compute_capability}); {REBUILD}")


class _DeviceOutput:
    """An output left on the device by ``run_bound``; ``numpy()`` copies it to the host."""

    def __init__(self, buffer: tp.Any, stream: tp.Any):
        self.buffer, self.stream = buffer, stream

    def numpy(self) -> np.ndarray:
        out = self.buffer.copy_to(np.empty(self.buffer.shape, dtype=self.buffer.dtype), stream=self.stream)
        self.stream.synchronize()
        return out


class TensorRTEngine:
    on_gpu = True

    def __init__(self, path: Path, name: str, expected_device: tp.Optional[tp.Mapping[str, tp.Any]] = None):
        try:
            import tensorrt as trt
            from polygraphy import cuda
        except ImportError as exc:
            raise InputError(f"TensorRT backend needs the `tensorrt` and `polygraphy` packages ({exc}); "
                             "install them (JetPack ships tensorrt) or use --backend onnxruntime") from exc
        if not Path(path).is_file():
            raise InputError(f"TensorRT engine {path} is missing; {REBUILD}")
        self.name = name
        self._trt, self._cuda = trt, cuda
        check_engine_device(expected_device, str(trt.__version__), *_current_gpu())
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise InputError(f"{path} does not load with TensorRT {trt.__version__} on this GPU (built for another "
                             f"GPU or TensorRT version?); {REBUILD}")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = cuda.Stream()
        self._buffers: tp.Dict[str, tp.Any] = {}

    def _buffer(self, name: str, shape: tp.Tuple[int, ...], dtype: np.dtype):
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype:
            buf = self._cuda.DeviceArray(shape=shape, dtype=dtype)
            self._buffers[name] = buf
        else:
            buf.resize(shape)
        return buf

    def to_device(self, array: np.ndarray):
        """A device copy of ``array`` that ``run_bound`` binds without copying again."""
        arr = np.ascontiguousarray(array)
        buf = self._cuda.DeviceArray(shape=arr.shape, dtype=arr.dtype)
        buf.copy_from(arr, stream=self.stream)
        return buf

    def _execute(self, inputs: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        for name in self.input_names:
            value = inputs[name]
            if isinstance(value, np.ndarray):
                arr = np.ascontiguousarray(value)
                buf = self._buffer(name, arr.shape, arr.dtype)
                buf.copy_from(arr, stream=self.stream)
            else:  # already on the device (to_device)
                buf = value
            self.context.set_input_shape(name, tuple(buf.shape))
            self.context.set_tensor_address(name, buf.ptr)
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = self._buffer(name, shape, np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))))
            self.context.set_tensor_address(name, buf.ptr)
            outs[name] = buf
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execution of {self.name} failed")
        return outs

    def __call__(self, **inputs: np.ndarray) -> tp.Dict[str, np.ndarray]:
        return {n: out.numpy() for n, out in self.run_bound(inputs).items()}

    def run_bound(self, inputs: tp.Mapping[str, tp.Any]) -> tp.Dict[str, _DeviceOutput]:
        """Inputs may be numpy arrays or ``to_device`` buffers; outputs stay on the device."""
        return {n: _DeviceOutput(b, self.stream) for n, b in self._execute(inputs).items()}


def _current_gpu() -> tp.Tuple[tp.Optional[str], tp.Optional[str]]:
    """(name, compute capability) of device 0 through cuda-python when installed, else (None, None)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            return None, None
    try:
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None, None
        name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, (bytes, bytearray)) else str(prop.name)
        return name.strip(), f"{prop.major}.{prop.minor}"
    except Exception:
        return None, None
