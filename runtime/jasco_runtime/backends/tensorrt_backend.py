"""TensorRT engine through the ``tensorrt`` runtime and polygraphy's CUDA helpers (no torch).

Written against the TensorRT 10 API (named I/O tensors, ``execute_async_v3``).  Engines are not
portable: a plan built for another GPU or TensorRT version fails to deserialize, which we turn into
a "rebuild with jasco-export" message.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError


class TensorRTEngine:
    def __init__(self, path: Path, name: str):
        try:
            import tensorrt as trt
            from polygraphy import cuda
        except ImportError as exc:
            raise InputError(f"TensorRT backend needs the `tensorrt` and `polygraphy` packages ({exc}); "
                             "install them (JetPack ships tensorrt) or use --backend onnxruntime") from exc
        self.name = name
        self._trt, self._cuda = trt, cuda
        logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise InputError(f"{path} was built for another GPU or TensorRT version ({trt.__version__} here); "
                             "rebuild it on this machine with `jasco-export --backend trt`")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = cuda.Stream()
        self._buffers: tp.Dict[str, tp.Any] = {}

    def _buffer(self, name: str, shape: tp.Tuple[int, ...], dtype: np.dtype):
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._cuda.DeviceArray(shape=shape, dtype=dtype)
            self._buffers[name] = buf
        else:
            buf.resize(shape)
        return buf

    def __call__(self, **inputs: np.ndarray) -> tp.Dict[str, np.ndarray]:
        trt = self._trt
        for name in self.input_names:
            arr = np.ascontiguousarray(inputs[name])
            self.context.set_input_shape(name, arr.shape)
            buf = self._buffer(name, arr.shape, arr.dtype)
            buf.copy_from(arr, stream=self.stream)
            self.context.set_tensor_address(name, buf.ptr)
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            buf = self._buffer(name, shape, dtype)
            self.context.set_tensor_address(name, buf.ptr)
            outs[name] = buf
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execution of {self.name} failed")
        result = {n: b.copy_to(np.empty(b.shape, dtype=b.dtype), stream=self.stream) for n, b in outs.items()}
        self.stream.synchronize()
        return result
