"""A strict stand-in for TensorRT 10.13 / 11.4 and cuda-python's CUDA runtime, under the real polygraphy.

Why: no GPU or TensorRT exists where the tests run, and a stand-in that accepts whatever it is given
cannot catch the bugs that matter (leaked device memory, unchecked ``set_input_shape``, bytes read with the
wrong dtype).  This one follows the documented TensorRT semantics (``NvInferRuntime.h``, ``NvInfer.h`` and
the Python bindings) and fails where TensorRT would.  It models only names the real bindings have:
tests/test_tensorrt_bindings.py checks every class, member and enum value against the real 10.13.3.9 and
11.4.0.106 modules (``TensorRTStandin(api=10|11)``: the version-dependent enums of each, 11 without the
removed weak-typing members), and its CUDA calls against the real cuda-bindings 12 and 13.

* **device memory** lives in a fake allocator behind a fake ``cuda.bindings.runtime`` (the module the project
  imports through ``jasco_runtime.tensorrt.device.cudart()``: no polygraphy internals are patched):
  256-byte aligned allocations, accounting of live allocations, streams and bytes copied per direction
  (``gpu.traffic``), an illegal-address error (sticky, like CUDA) when a kernel or copy touches bytes outside
  a live allocation, ``cudaFree`` of an unknown pointer fails, async copies run on their stream;
* **engines** keep profile bounds: ``get_tensor_shape`` gives -1 for dynamic dims until ``set_input_shape``,
  which returns False (and logs) outside the profile or on a static-dim mismatch; ``set_tensor_address``
  returns False for unknown names or unaligned pointers; ``execute_async_v3`` returns False when a shape or
  address is missing, and the "kernel" reads each input's raw bytes at its bound address with the engine's
  dtype and shape, runs the graph (ONNX Runtime on the ONNX the plan was built from) and writes the raw
  output bytes back — a wrong dtype, stale shape or wrong address gives wrong numbers or an error;
* **builds**: ``build_serialized_network`` returns an ``IHostMemory`` (buffer protocol only, not ``bytes``) or
  None; strongly typed networks refuse precision flags (10.x; 11 has none); dynamic inputs need a valid
  profile; TF32 is on until cleared; timing caches carry a TensorRT-version/device header, ``set_timing_cache``
  returns False on a mismatch and builds record their cache hits;
* **plans** carry the TensorRT version and compute capability; ``deserialize_cuda_engine`` returns None
  for another version, another GPU or garbage; TensorRT keeps the first logger it is given;
* **cuda-python** reports the configured device, or ``cudaErrorNoDevice`` / ``cudaErrorInsufficientDriver``.

Not modelled (review #23/#24): the parser accepts every ONNX op (the real one rejects some:
export/jasco_export/tensorrt/check.py tables them), no workspace limits or tactic failures, pageable host→device
copies synchronise their stream first (real CUDA stages them without a device sync).

Use it through the ``trt_standin`` fixture (tests/conftest.py), which installs it for one test.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
import typing as tp
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ALIGN = 256
PLAN_MAGIC = b"STANDIN-TRT-PLAN\n"
CACHE_MAGIC = b"STANDIN-TRT-TIMING\n"

# cudaError_t values (CUDA runtime API)
SUCCESS, INVALID_VALUE, MEMORY_ALLOCATION, INSUFFICIENT_DRIVER, NO_DEVICE, ILLEGAL_ADDRESS = 0, 1, 2, 35, 100, 700


class IllegalAddress(Exception):
    pass


# ======================================================================================================
# the device: memory and streams
# ======================================================================================================

class FakeGPU:
    """Device memory (one bytearray per allocation at fake addresses the host never dereferences) and streams."""

    BASE = 0x7F00_0000_0000

    def __init__(self, total_memory: int):
        self.total_memory = total_memory
        self.memory: tp.Dict[int, bytearray] = {}
        self.streams: tp.Dict[int, tp.List[tp.Callable[[], None]]] = {}
        self._next, self._next_stream = self.BASE, 0x5000
        self.sticky = SUCCESS  # a kernel fault poisons the context, as in CUDA
        self.mallocs = self.frees = 0
        self.traffic = {"h2d_bytes": 0, "d2h_bytes": 0, "d2d_bytes": 0, "h2d_copies": 0, "d2h_copies": 0,
                        "d2d_copies": 0}  # what the device saw (independent of the project's own counters)

    # -- accounting -------------------------------------------------------------------------------------
    @property
    def live_allocations(self) -> int:
        return len(self.memory)

    @property
    def live_bytes(self) -> int:
        return sum(len(m) for m in self.memory.values())

    @property
    def live_streams(self) -> int:
        return len(self.streams)

    # -- memory -----------------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> tp.Tuple[int, int]:
        if self.sticky:
            return self.sticky, 0
        if self.live_bytes + nbytes > self.total_memory:
            return MEMORY_ALLOCATION, 0
        base = self._next
        self._next += (max(nbytes, 1) + 2 * ALIGN - 1) // ALIGN * ALIGN + ALIGN  # a gap: overruns never land in a neighbour
        self.memory[base] = bytearray(nbytes)
        self.mallocs += 1
        return SUCCESS, base

    def free(self, ptr: int) -> int:
        if not ptr:
            return SUCCESS  # cudaFree(NULL) is a no-op
        if ptr not in self.memory:
            return INVALID_VALUE
        self.synchronize_all()  # cudaFree synchronises the device
        del self.memory[ptr]
        self.frees += 1
        return self.sticky

    def is_device(self, ptr: int) -> bool:
        return self.BASE <= ptr < self._next + ALIGN

    def region(self, ptr: int, nbytes: int) -> memoryview:
        for base, mem in self.memory.items():
            if base <= ptr < base + max(len(mem), 1):
                if ptr + nbytes > base + len(mem):
                    raise IllegalAddress(f"{nbytes} bytes at {ptr:#x} overrun the {len(mem)}-byte allocation at {base:#x}")
                return memoryview(mem)[ptr - base:ptr - base + nbytes]
        raise IllegalAddress(f"{ptr:#x} is not in a live device allocation")

    # -- streams ----------------------------------------------------------------------------------------
    def create_stream(self) -> int:
        self._next_stream += 0x10
        self.streams[self._next_stream] = []
        return self._next_stream

    def enqueue(self, stream: int, op: tp.Callable[[], None]) -> int:
        if stream == 0:  # legacy default stream: waits for the blocking streams, then runs
            self.synchronize_all()
            self._run(op)
            return self.sticky
        if stream not in self.streams:
            return INVALID_VALUE  # a destroyed or made-up stream handle
        self.streams[stream].append(op)
        return SUCCESS

    def _run(self, op: tp.Callable[[], None]) -> None:
        if self.sticky:
            return
        try:
            op()
        except IllegalAddress:
            self.sticky = ILLEGAL_ADDRESS

    def synchronize(self, stream: int) -> int:
        if stream and stream not in self.streams:
            return INVALID_VALUE
        ops = self.streams.get(stream, [])
        while ops:
            self._run(ops.pop(0))
        return self.sticky

    def synchronize_all(self) -> None:
        for s in list(self.streams):
            self.synchronize(s)

    def destroy_stream(self, stream: int) -> int:
        if stream not in self.streams:
            return INVALID_VALUE
        self.synchronize(stream)
        del self.streams[stream]
        return SUCCESS


def _value(arg: tp.Any) -> int:
    v = getattr(arg, "value", arg)
    return int(v or 0)


class FakeCudart:
    """The memory, stream and copy calls of cuda-python's ``cuda.bindings.runtime`` on a :class:`FakeGPU`, with
    the real signatures and ``(cudaError_t, *values)`` results (``cudaMalloc(size)``, ``cudaFree(devPtr)``,
    ``cudaMemcpyAsync(dst, src, count, kind, stream)``, ``cudaStreamCreate()``, ``cudaStreamSynchronize(stream)``,
    ``cudaStreamDestroy(stream)``); tests/test_tensorrt_bindings.py checks the names against the real module."""

    def __init__(self, gpu: FakeGPU):
        self.gpu = gpu

    def cudaMalloc(self, size):
        code, ptr = self.gpu.malloc(int(size))
        return cudaError_t(code), ptr

    def cudaFree(self, devPtr):
        return (cudaError_t(self.gpu.free(int(devPtr))),)

    def cudaStreamCreate(self):
        return cudaError_t.cudaSuccess, cudaStream_t(self.gpu.create_stream())

    def cudaStreamSynchronize(self, stream):
        return (cudaError_t(self.gpu.synchronize(int(stream))),)

    def cudaStreamDestroy(self, stream):
        return (cudaError_t(self.gpu.destroy_stream(int(stream))),)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        if not isinstance(kind, cudaMemcpyKind):
            raise TypeError(f"Argument 'kind' is not instance of type (expected <class 'cudaMemcpyKind'>, found {type(kind)})")
        return (cudaError_t(self._copy(int(dst), int(src), int(count), int(kind), int(stream))),)

    def _copy(self, dst: int, src: int, n: int, kind: int, stream: int) -> int:
        gpu = self.gpu
        if gpu.sticky:
            return gpu.sticky
        try:
            if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
                if gpu.is_device(src):
                    return INVALID_VALUE
                gpu.region(dst, n)
                gpu.synchronize(stream)  # pageable source: staged after a stream sync (CUDA API sync behaviour)
                data = ctypes.string_at(src, n)
                gpu.traffic["h2d_bytes"] += n
                gpu.traffic["h2d_copies"] += 1
                return gpu.enqueue(stream, lambda: gpu.region(dst, n).__setitem__(slice(None), data))
            if kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
                if gpu.is_device(dst):
                    return INVALID_VALUE
                gpu.region(src, n)

                def d2h() -> None:
                    ctypes.memmove(dst, bytes(gpu.region(src, n)), n)

                gpu.traffic["d2h_bytes"] += n
                gpu.traffic["d2h_copies"] += 1
                code = gpu.enqueue(stream, d2h)
                # to pageable memory the call returns once the copy is done (CUDA API sync behaviour)
                return code or gpu.synchronize(stream)
            if kind == cudaMemcpyKind.cudaMemcpyDeviceToDevice:
                gpu.region(src, n), gpu.region(dst, n)
                gpu.traffic["d2d_bytes"] += n
                gpu.traffic["d2d_copies"] += 1
                return gpu.enqueue(stream, lambda: gpu.region(dst, n).__setitem__(slice(None), bytes(gpu.region(src, n))))
        except IllegalAddress:
            return INVALID_VALUE
        return INVALID_VALUE  # HostToHost / Default: the project never asks for them


# ======================================================================================================
# tensorrt: enums, host memory, logger
# ======================================================================================================

_ACTIVE: tp.Optional["TensorRTStandin"] = None


def _standin() -> "TensorRTStandin":
    if _ACTIVE is None:
        raise RuntimeError("the TensorRT stand-in is not installed")
    return _ACTIVE


class DataType(enum.IntEnum):
    FLOAT, HALF, INT8, INT32, BOOL, UINT8, FP8, BF16, INT64, INT4, FP4, E8M0 = range(12)

    @property
    def itemsize(self) -> float:
        return {0: 4, 1: 2, 2: 1, 3: 4, 4: 1, 5: 1, 6: 1, 7: 2, 8: 8, 9: 0.5, 10: 0.5, 11: 1}[int(self)]


_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.INT64: np.int64, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 7: DataType.INT64,
              9: DataType.BOOL, 2: DataType.UINT8, 16: DataType.BF16}


def nptype(trt_type: DataType):
    """As tensorrt.nptype: the numpy type of a TensorRT DataType, TypeError for those numpy lacks."""
    if trt_type in _NUMPY:
        return _NUMPY[trt_type]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


# The enums whose members differ between TensorRT 10.13 and 11.4 (values from the real bindings'
# ``__members__``; tests/test_tensorrt_bindings.py checks them against both): 11 removed weak typing (the
# FP16/INT8/BF16/FP8/INT4/FP4 and precision-constraint flags), EXPLICIT_BATCH, and renumbered the rest.
API_ENUMS: tp.Dict[int, tp.Dict[str, tp.Dict[str, int]]] = {
    10: {
        "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                                          "PREFER_AOT_PYTHON_PLUGINS": 3},
        "BuilderFlag": {
            "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
            "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10,
            "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12, "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14,
            "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16, "BF16": 17, "DISABLE_COMPILATION_CACHE": 18, "STRIP_PLAN": 19,
            "WEIGHTLESS": 19, "REFIT_IDENTICAL": 20, "WEIGHT_STREAMING": 21, "INT4": 22, "REFIT_INDIVIDUAL": 23,
            "STRICT_NANS": 24, "MONITOR_MEMORY": 25, "FP4": 26, "EDITABLE_TIMING_CACHE": 27,
            "DISTRIBUTIVE_INDEPENDENCE": 28},
        "OnnxParserFlag": {"NATIVE_INSTANCENORM": 0, "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA": 1},
    },
    11: {
        "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                          "PREFER_AOT_PYTHON_PLUGINS": 2},
        "BuilderFlag": {
            "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6, "SPARSE_WEIGHTS": 7,
            "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
            "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17, "STRIP_PLAN": 18,
            "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22, "STRICT_NANS": 23,
            "MONITOR_MEMORY": 24, "EDITABLE_TIMING_CACHE": 26, "DISTRIBUTIVE_INDEPENDENCE": 27},
        "OnnxParserFlag": {"NATIVE_INSTANCENORM": 0, "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA": 1,
                           "REPORT_CAPABILITY_DLA": 2, "ENABLE_PLUGIN_OVERRIDE": 3, "ADJUST_FOR_DLA": 4},
    },
}
PRECISION_FLAGS = {"FP16", "INT8", "FP8", "BF16", "INT4", "FP4"}  # 10.x: not allowed with STRONGLY_TYPED networks


class TensorIOMode(enum.IntEnum):
    NONE, INPUT, OUTPUT = range(3)


MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2,
                                                 "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5})
ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
# the LayerType members the stand-in's parser gives its layers (real values; polygraphy compares SHAPE,
# QUANTIZE, DEQUANTIZE), an ONNX op maps to its TensorRT layer kind, anything else is ELEMENTWISE
LayerType = enum.IntEnum("LayerType", {"CONVOLUTION": 0, "CAST": 1, "ACTIVATION": 2, "SOFTMAX": 6,
                                       "CONCATENATION": 8, "ELEMENTWISE": 9, "UNARY": 11, "SHUFFLE": 13, "REDUCE": 14,
                                       "GATHER": 16, "MATRIX_MULTIPLY": 17, "CONSTANT": 19, "SLICE": 22, "SHAPE": 23,
                                       "QUANTIZE": 32, "DEQUANTIZE": 33, "NORMALIZATION": 45})
_LAYER_OF_OP = {"Conv": "CONVOLUTION", "ConvTranspose": "CONVOLUTION", "Cast": "CAST", "Relu": "ACTIVATION",
                "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION", "Softmax": "SOFTMAX", "Concat": "CONCATENATION",
                "Sqrt": "UNARY", "Exp": "UNARY", "Erf": "UNARY", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE",
                "ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "Gather": "GATHER", "MatMul": "MATRIX_MULTIPLY",
                "Gemm": "MATRIX_MULTIPLY", "Constant": "CONSTANT", "Slice": "SLICE", "Shape": "SHAPE",
                "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "LayerNormalization": "NORMALIZATION"}


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:  # pragma: no cover - overridden
        pass


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = ILogger.Severity

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity, msg) -> None:
        pass


Logger.Severity = ILogger.Severity


def _deprecated_enter(self):
    warnings.warn("Context managers for TensorRT types are deprecated. Memory will be freed automatically when the "
                  "reference count reaches 0.", DeprecationWarning, stacklevel=2)
    return self


class IHostMemory(bytearray):
    """Library-owned host memory: the buffer protocol, ``nbytes`` and ``dtype`` — not a ``bytes``."""

    _ALLOWED = {"nbytes", "dtype"}

    def __getattribute__(self, name: str):
        if not name.startswith("_") and name not in IHostMemory._ALLOWED:
            raise AttributeError(f"'tensorrt.IHostMemory' object has no attribute '{name}'")
        return super().__getattribute__(name)

    @property
    def nbytes(self) -> int:
        return len(memoryview(self))

    @property
    def dtype(self) -> DataType:
        return DataType.UINT8

    def __bool__(self) -> bool:
        return True

    def _no(self, *a: tp.Any) -> tp.Any:
        raise TypeError("'tensorrt.IHostMemory' supports the buffer protocol only (wrap it in memoryview/bytes)")

    __len__ = __getitem__ = __iter__ = __add__ = __contains__ = __mul__ = _no  # type: ignore[assignment]
    __hash__ = object.__hash__
    __enter__ = _deprecated_enter

    def __exit__(self, *exc: tp.Any) -> None:
        pass


def _emit(severity: ILogger.Severity, msg: str) -> None:
    s = _standin()
    if severity <= ILogger.Severity.ERROR:
        s.errors.append(msg)
    if s.loggers:
        s.loggers[0].log(severity, msg)


def _register_logger(logger: ILogger) -> None:
    s = _standin()
    if not isinstance(logger, ILogger):
        raise TypeError("incompatible function arguments: logger must be a tensorrt.ILogger")
    if not s.loggers:
        s.loggers.append(logger)
    elif logger is not s.loggers[0]:
        s.loggers.append(logger)
        _emit(ILogger.Severity.WARNING, "The logger passed into createInferRuntime differs from one already provided "
                                        "for an existing builder, runtime, or refitter. Uses of the global logger, "
                                        "returned by nvinfer1::getLogger(), will return the existing value.")


def init_libnvinfer_plugins(logger, namespace) -> bool:
    return True


# ======================================================================================================
# tensorrt: network, parser, profiles, config, timing cache, builder
# ======================================================================================================

@dataclass
class ITensor:
    name: str
    shape: tp.Tuple[int, ...]
    dtype: DataType
    is_shape_tensor: bool = False
    is_network_input: bool = True


class _Layer:
    """An ILayer: ``name`` and ``type`` (both versions); 10.x also has ``precision_is_set`` (11 removed it)."""

    def __init__(self, name: str, op: str):
        self.name, self._op = name, op
        self.type = LayerType[_LAYER_OF_OP.get(op, "ELEMENTWISE")]
        if _standin().api == 10:  # set by name: the 11.x ILayer has no such member (the AST check skips it)
            setattr(self, "precision_is_set", False)


class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags, self.name = int(flags), "network"
        self._inputs: tp.List[ITensor] = []
        self._outputs: tp.List[ITensor] = []
        self._layers: tp.List[_Layer] = []
        self._model_bytes: tp.Optional[bytes] = None
        self._source, self._precision = "", "fp32"

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: len(self._layers))

    def get_input(self, i: int) -> ITensor:
        return self._inputs[i]

    def get_output(self, i: int) -> ITensor:
        return self._outputs[i]

    def get_layer(self, i: int) -> _Layer:
        return self._layers[i]

    def __getitem__(self, i: int) -> _Layer:  # iteration goes through __getitem__/__len__, as in the bindings
        if not 0 <= i < len(self._layers):
            raise IndexError(i)
        return self._layers[i]

    def __len__(self) -> int:
        return len(self._layers)

    def get_flag(self, flag) -> bool:
        return bool(self.flags & (1 << int(flag)))

    def _strongly_typed(self) -> bool:
        """10.x: the STRONGLY_TYPED creation flag; 11: always (the flag is accepted and ignored)."""
        s = _standin()
        return s.api >= 11 or self.get_flag(s.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


# ONNX tensor types TensorRT has no tensor for (the parser fails on them); 11 = DOUBLE
_UNSUPPORTED_ONNX = {5: "INT16", 4: "UINT16", 12: "UINT32", 13: "UINT64", 8: "STRING", 11: "DOUBLE", 14: "COMPLEX64"}


class _ParserError:
    def __init__(self, node: str, desc: str):
        self._node, self._desc = node, desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return f"In node {self._node}: UNSUPPORTED_NODE: {self._desc}"


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger):
        _register_logger(logger)
        self._network, self._errors, self.flags = network, [], 0

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, i: int) -> _ParserError:
        return self._errors[i]

    def clear_flag(self, flag) -> None:
        self.flags &= ~(1 << int(flag))

    def parse_from_file(self, path: str) -> bool:
        import onnx

        if not Path(path).is_file():
            _emit(ILogger.Severity.ERROR, f"ModelImporter.cpp: Failed to parse ONNX model from file: {path}")
            return False
        model = onnx.load(str(path))  # with its external data, as the parser reads it beside the file
        return self._populate(model, str(path))

    def parse(self, model_bytes) -> bool:
        import onnx

        return self._populate(onnx.load_from_string(bytes(model_bytes)), "<bytes>")

    def _populate(self, model, source: str) -> bool:
        g = model.graph
        for node in g.node:
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                if to in _UNSUPPORTED_ONNX:
                    self._errors.append(_ParserError(node.name, f"Cast to {_UNSUPPORTED_ONNX[to]} is not supported"))
            self._network._layers.append(_Layer(node.name or node.output[0], node.op_type))
        inits = {i.name for i in g.initializer}

        def tensors(values, is_input):
            out = []
            for vi in values:
                if vi.name in inits:
                    continue
                elem = vi.type.tensor_type.elem_type
                if elem not in _FROM_ONNX:
                    self._errors.append(_ParserError(vi.name, f"network I/O type {elem} is not supported"))
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                out.append(ITensor(vi.name, dims, _FROM_ONNX[elem], is_network_input=is_input))
            return out

        self._network._inputs = tensors(g.input, True)
        self._network._outputs = tensors(g.output, False)
        for e in self._errors:
            _emit(ILogger.Severity.ERROR, str(e))
        self._network._model_bytes = model.SerializeToString()
        half = any(i.data_type == 10 for i in g.initializer) or any(
            a.name == "to" and a.i == 10 for node in g.node if node.op_type == "Cast" for a in node.attribute)
        self._network._precision = "fp16" if half else "fp32"
        self._network._source = Path(source).name
        return not self._errors

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: tp.Dict[str, tp.Tuple[tp.Tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:
        mn, op, mx = (tuple(int(d) for d in s) for s in (min, opt, max))
        if not len(mn) == len(op) == len(mx):
            raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
        if any(not 0 <= a <= b <= c for a, b, c in zip(mn, op, mx)):
            raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
        self._shapes[input] = (mn, op, mx)

    def get_shape(self, input: str):
        return list(self._shapes.get(input, ()))

    def __bool__(self) -> bool:
        return bool(self._shapes)


class ITimingCache:
    def __init__(self, trt_version: str, device: str, entries: tp.Iterable[str] = ()):
        self._trt_version, self._device, self._entries = trt_version, device, set(entries)

    @classmethod
    def _parse(cls, data: bytes) -> tp.Optional["ITimingCache"]:
        if not data.startswith(CACHE_MAGIC):
            return None
        try:
            h = json.loads(data[len(CACHE_MAGIC):].decode())
            return cls(h["trt_version"], h["device"], h["entries"])
        except (ValueError, KeyError):
            return None

    def serialize(self) -> IHostMemory:
        return IHostMemory(CACHE_MAGIC + json.dumps({"trt_version": self._trt_version, "device": self._device,
                                                     "entries": sorted(self._entries)}).encode())

    def combine(self, input_cache: "ITimingCache", ignore_mismatch: bool) -> bool:
        if input_cache._trt_version != self._trt_version or (input_cache._device != self._device and not ignore_mismatch):
            return False
        self._entries |= input_cache._entries
        return True

    def reset(self) -> bool:
        self._entries.clear()
        return True


class IBuilderConfig:
    def __init__(self) -> None:
        s = _standin()
        self._flags = {s.BuilderFlag.TF32}  # TF32 is enabled by default (NvInfer.h BuilderFlag::kTF32)
        self._pools = {MemoryPoolType.WORKSPACE: s.config.total_memory}
        self._profiles: tp.List[IOptimizationProfile] = []
        self._timing_cache: tp.Optional[ITimingCache] = None
        self._level = 3
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.DLA_core, self.default_device_type = -1, DeviceType.GPU

    def set_flag(self, flag) -> None:
        self._flags.add(_standin().BuilderFlag(int(flag)))

    def clear_flag(self, flag) -> None:
        self._flags.discard(_standin().BuilderFlag(int(flag)))

    def get_flag(self, flag) -> bool:
        return _standin().BuilderFlag(int(flag)) in self._flags

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self._pools[MemoryPoolType(int(pool))] = int(size)

    def get_memory_pool_limit(self, pool) -> int:
        return self._pools.get(MemoryPoolType(int(pool)), 0)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile:
            _emit(ILogger.Severity.ERROR, "IBuilderConfig::addOptimizationProfile: invalid optimization profile")
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))
    flags = property(lambda self: sum(1 << int(f) for f in self._flags))  # a bitmask, as in the bindings

    @property
    def builder_optimization_level(self) -> int:
        return self._level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level: int) -> None:
        if not 0 <= int(level) <= 5:
            _emit(ILogger.Severity.ERROR, f"setBuilderOptimizationLevel: level {level} is outside [0, 5]")
            return
        self._level = int(level)

    def create_timing_cache(self, serialized_timing_cache) -> tp.Optional[ITimingCache]:
        s = _standin()
        data = bytes(memoryview(serialized_timing_cache))
        if not data:
            return ITimingCache(s.config.trt_version, s.device_key)
        cache = ITimingCache._parse(data)
        if cache is None:
            _emit(ILogger.Severity.ERROR, "createTimingCache: the serialized timing cache is corrupted")
        return cache

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        s = _standin()
        if cache._trt_version != s.config.trt_version or (cache._device != s.device_key and not ignore_mismatch):
            _emit(ILogger.Severity.ERROR, "IBuilderConfig::setTimingCache: the timing cache was created with a different "
                                          "TensorRT version or on a device with different properties")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> tp.Optional[ITimingCache]:
        return self._timing_cache

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


class Builder:
    def __init__(self, logger: ILogger):
        s = _standin()
        _register_logger(logger)
        if s.cuda_error_code():
            raise TypeError("pybind11::init(): factory function returned nullptr")  # createInferBuilder without a GPU
        self.num_DLA_cores = 0
        if s.api == 10:  # removed in 11 (set by name: see the bindings test)
            setattr(self, "platform_has_fast_fp16", True)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _error(self, msg: str) -> None:
        _emit(ILogger.Severity.ERROR, msg)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> tp.Optional[IHostMemory]:
        s = _standin()
        if network._model_bytes is None or not network._outputs:
            return self._error("Network must have at least one output")
        flags = sorted(f.name for f in config._flags)
        if s.api == 10 and network._strongly_typed() and PRECISION_FLAGS & set(flags):
            return self._error(f"Error Code 3: API Usage Error (builder flags {sorted(PRECISION_FLAGS & set(flags))} are "
                               "not allowed with a strongly typed network)")
        dynamic = [t for t in network._inputs if any(d < 0 for d in t.shape)]
        if dynamic and not config._profiles:
            return self._error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
        for k, profile in enumerate(config._profiles):
            for t in network._inputs:
                if t.name not in profile._shapes:
                    if t in dynamic:
                        return self._error(f"Optimization profile {k} does not set the dimensions of input {t.name}")
                    continue
                mn, _, mx = profile._shapes[t.name]
                if len(mn) != len(t.shape) or any(d >= 0 and not a == b == d for d, a, b in zip(t.shape, mn, mx)):
                    return self._error(f"Profile {k} of input {t.name} {profile._shapes[t.name]} does not match the "
                                       f"network dims {t.shape}")
        cache = config._timing_cache or ITimingCache(s.config.trt_version, s.device_key)
        keys = {f"{layer._op}/{network._precision}/tf32={config.get_flag(s.BuilderFlag.TF32)}" for layer in network._layers}
        hits = len(keys & cache._entries)
        cache._entries |= keys
        header = {"trt_version": s.config.trt_version, "device": s.device_key, "strongly_typed": network._strongly_typed(),
                  "flags": flags, "profiles": [{n: [list(x) for x in v] for n, v in p._shapes.items()} for p in config._profiles],
                  "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network._inputs],
                  "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network._outputs]}
        s.builds.append({"source": network._source, "strongly_typed": network._strongly_typed(), "flags": flags,
                         "precision": network._precision, "tf32": config.get_flag(s.BuilderFlag.TF32), "workspace": config._pools[MemoryPoolType.WORKSPACE],
                         "optimization_level": config.builder_optimization_level, "profiles": header["profiles"],
                         "cache_hits": hits, "cache_misses": len(keys) - hits})
        head = json.dumps(header).encode()
        return IHostMemory(PLAN_MAGIC + len(head).to_bytes(8, "little") + head + network._model_bytes)

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


# ======================================================================================================
# tensorrt: runtime, engine, execution context
# ======================================================================================================

class Runtime:
    def __init__(self, logger: ILogger):
        _register_logger(logger)
        if _standin().cuda_error_code():
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, serialized_engine) -> tp.Optional["ICudaEngine"]:
        s = _standin()
        data = bytes(memoryview(serialized_engine))
        if not data.startswith(PLAN_MAGIC):
            _emit(ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                          "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        n = int.from_bytes(data[len(PLAN_MAGIC):len(PLAN_MAGIC) + 8], "little")
        start = len(PLAN_MAGIC) + 8
        header = json.loads(data[start:start + n].decode())
        if header["trt_version"] != s.config.trt_version:
            _emit(ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan "
                                          f"file is not compatible with this version of TensorRT, expecting library version "
                                          f"{s.config.trt_version} got {header['trt_version']})")
            return None
        if header["device"] != s.device_key:
            _emit(ILogger.Severity.ERROR, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan "
                                          f"file is generated on an incompatible device, expecting {s.device_key} got "
                                          f"{header['device']})")
            return None
        return ICudaEngine(header, data[start + n:], data)

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


class ICudaEngine:
    def __init__(self, header: tp.Dict[str, tp.Any], model_bytes: bytes, plan: bytes):
        self._header, self._model_bytes, self._plan = header, model_bytes, plan
        self._io = {name: (tuple(shape), DataType(dt), TensorIOMode.INPUT) for name, shape, dt in header["inputs"]}
        self._io.update({name: (tuple(shape), DataType(dt), TensorIOMode.OUTPUT) for name, shape, dt in header["outputs"]})
        self._names = list(self._io)
        self._profiles = header["profiles"]
        self._session = None
        self._shape_cache: tp.Dict[tp.Tuple, tp.Dict[str, tp.Tuple[int, ...]]] = {}

    num_io_tensors = property(lambda self: len(self._names))
    num_optimization_profiles = property(lambda self: max(len(self._profiles), 1))

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][2] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._io[name][1]

    def get_tensor_shape(self, name: str) -> tp.Tuple[int, ...]:
        return self._io[name][0]

    def get_tensor_profile_shape(self, name: str, profile_index: int):
        if self.get_tensor_mode(name) != TensorIOMode.INPUT:
            raise RuntimeError(f"get_tensor_profile_shape: {name} is not an input")
        p = self._profiles[profile_index] if self._profiles else {}
        if name in p:
            return [tuple(s) for s in p[name]]
        return [self._io[name][0]] * 3

    def create_execution_context(self) -> "IExecutionContext":
        return IExecutionContext(self)

    def serialize(self) -> IHostMemory:
        return IHostMemory(self._plan)

    # -- the "kernels": the graph the plan was built from, on ONNX Runtime (CPU) -----------------------
    def _run(self, feeds: tp.Dict[str, np.ndarray]) -> tp.Dict[str, np.ndarray]:
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(self._model_bytes, providers=["CPUExecutionProvider"])
        outputs = [n for n in self._names if self._io[n][2] == TensorIOMode.OUTPUT]
        return dict(zip(outputs, self._session.run(outputs, feeds)))

    def _output_shapes_for(self, input_shapes: tp.Dict[str, tp.Tuple[int, ...]]) -> tp.Dict[str, tp.Tuple[int, ...]]:
        """Shape inference (here by running the graph once per distinct set of input shapes)."""
        key = tuple(sorted(input_shapes.items()))
        if key not in self._shape_cache:
            feeds = {n: np.zeros(s, nptype(self._io[n][1])) for n, s in input_shapes.items()}
            if "input_ids" in feeds:
                feeds["input_ids"] += 1
            self._shape_cache[key] = {n: tuple(v.shape) for n, v in self._run(feeds).items()}
        return self._shape_cache[key]

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self._shapes: tp.Dict[str, tp.Tuple[int, ...]] = {}
        self._addresses: tp.Dict[str, int] = {}
        self.active_optimization_profile = 0
        _standin().contexts += 1

    def _inputs(self) -> tp.List[str]:
        return [n for n in self.engine._names if self.engine._io[n][2] == TensorIOMode.INPUT]

    def set_input_shape(self, name: str, shape) -> bool:
        e = self.engine
        if e.get_tensor_mode(name) != TensorIOMode.INPUT:
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::setInputShape: {name} is not an input tensor")
            return False
        shape = tuple(int(d) for d in shape)
        dims = e._io[name][0]
        mn, _, mx = e.get_tensor_profile_shape(name, self.active_optimization_profile)
        if len(shape) != len(dims) or any(d >= 0 and d != v for d, v in zip(dims, shape)):
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Static "
                                          f"dimension mismatch for tensor {name}: {shape} vs engine dims {dims})")
            return False
        if any(not a <= v <= b for a, v, b in zip(mn, shape, mx)):
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Supplied "
                                          f"shape {shape} for tensor {name} is out of the optimization profile range "
                                          f"[{tuple(mn)}, {tuple(mx)}])")
            return False
        self._shapes[name] = shape
        return True

    def infer_shapes(self) -> tp.List[str]:
        return [n for n in self._inputs() if n not in self._shapes and any(d < 0 for d in self.engine._io[n][0])]

    def get_tensor_shape(self, name: str) -> tp.Tuple[int, ...]:
        e = self.engine
        if name not in e._io:
            return ()
        if e._io[name][2] == TensorIOMode.INPUT:
            if name in self._shapes:
                return self._shapes[name]
            mn, _, mx = e.get_tensor_profile_shape(name, self.active_optimization_profile)
            return tuple(d if d >= 0 else (a if a == b else -1) for d, a, b in zip(e._io[name][0], mn, mx))
        if self.infer_shapes():
            return tuple(d if d >= 0 else -1 for d in e._io[name][0])
        return e._output_shapes_for(self._input_shapes())[name]

    def _input_shapes(self) -> tp.Dict[str, tp.Tuple[int, ...]]:
        return {n: self._shapes.get(n, self.engine._io[n][0]) for n in self._inputs()}

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine._io:
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::setTensorAddress: {name} is not an I/O tensor")
            return False
        if int(memory) % ALIGN:
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::setTensorAddress: address {int(memory):#x} of {name} is not "
                                          f"{ALIGN}-byte aligned")
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        s, e = _standin(), self.engine
        missing = self.infer_shapes()
        unbound = [n for n in e._names if not self._addresses.get(n)]
        if missing or unbound:
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (shapes not set "
                                          f"for {missing}, addresses not set for {unbound})")
            return False
        inputs = self._input_shapes()
        outputs = e._output_shapes_for(inputs)
        addresses = dict(self._addresses)
        gpu = s.gpu

        def kernel() -> None:
            feeds = {}
            for n, shape in inputs.items():
                dtype = np.dtype(nptype(e._io[n][1]))
                raw = bytes(gpu.region(addresses[n], int(np.prod(shape)) * dtype.itemsize))
                feeds[n] = np.frombuffer(raw, dtype).reshape(shape)
            for n, value in e._run(feeds).items():
                value = np.ascontiguousarray(value, dtype=nptype(e._io[n][1]))
                assert value.shape == outputs[n], (n, value.shape, outputs[n])
                gpu.region(addresses[n], value.nbytes)[:] = value.tobytes()

        s.executions += 1
        code = gpu.enqueue(int(stream_handle), kernel)
        if code:
            _emit(ILogger.Severity.ERROR, f"IExecutionContext::enqueueV3: CUDA error {code} on stream {stream_handle:#x}")
            return False
        return True

    __enter__ = _deprecated_enter

    def __exit__(self, *exc):
        pass


def _api_enums(api: int) -> tp.Dict[str, tp.Type[enum.IntEnum]]:
    """The version-dependent enums of TensorRT ``api`` (10 or 11), as IntEnums (aliases kept)."""
    return {name: enum.IntEnum(name, members) for name, members in API_ENUMS[api].items()}


def _tensorrt_module(version: str, enums: tp.Dict[str, tp.Type[enum.IntEnum]]) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = __file__
    for obj in (DataType, TensorIOMode, MemoryPoolType, ProfilingVerbosity, DeviceType, LayerType, ILogger, Logger,
                IHostMemory, ITensor, INetworkDefinition, OnnxParser, IOptimizationProfile, ITimingCache, IBuilderConfig,
                Builder, Runtime, ICudaEngine, IExecutionContext, *enums.values()):
        setattr(trt, obj.__name__, obj)
    trt.nptype, trt.init_libnvinfer_plugins = nptype, init_libnvinfer_plugins
    for alias, member in (("float32", "FLOAT"), ("float16", "HALF"), ("int8", "INT8"), ("int32", "INT32"),
                          ("bool", "BOOL"), ("uint8", "UINT8"), ("fp8", "FP8"), ("bfloat16", "BF16"),
                          ("int64", "INT64"), ("int4", "INT4"), ("fp4", "FP4"), ("e8m0", "E8M0")):
        setattr(trt, alias, DataType[member])
    return trt


# ======================================================================================================
# cuda-python
# ======================================================================================================

class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault = range(5)


class cudaStream_t:
    """As cuda-python's: ``int(stream)`` is the handle (``getPtr()`` would be the address of its storage)."""

    def __init__(self, init_value: int = 0):
        self._value = int(init_value)

    def __int__(self) -> int:
        return self._value


class cudaError_t(enum.IntEnum):
    cudaSuccess = SUCCESS
    cudaErrorInvalidValue = INVALID_VALUE
    cudaErrorMemoryAllocation = MEMORY_ALLOCATION
    cudaErrorInsufficientDriver = INSUFFICIENT_DRIVER
    cudaErrorNoDevice = NO_DEVICE
    cudaErrorIllegalAddress = ILLEGAL_ADDRESS


def _cuda_python_modules() -> tp.Dict[str, types.ModuleType]:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = cudaError_t

    def device_count():
        code = _standin().cuda_error_code()
        return (cudaError_t(code), 0) if code else (cudaError_t.cudaSuccess, 1)

    def properties(device: int):
        s = _standin()
        if s.cuda_error_code() or device != 0:
            return cudaError_t(s.cuda_error_code() or INVALID_VALUE), None
        major, minor = s.config.compute_capability
        name = s.config.gpu_name.encode().ljust(256, b"\0")
        return cudaError_t.cudaSuccess, types.SimpleNamespace(name=name, major=major, minor=minor,
                                                              totalGlobalMem=s.config.total_memory)

    def mem_info():
        s = _standin()
        return cudaError_t.cudaSuccess, s.config.total_memory - s.gpu.live_bytes, s.config.total_memory

    rt.cudaGetDeviceCount = device_count
    rt.cudaGetDeviceProperties = properties
    rt.cudaDriverGetVersion = lambda: (cudaError_t.cudaSuccess, _standin().config.driver_version)
    rt.cudaRuntimeGetVersion = lambda: (cudaError_t.cudaSuccess, _standin().config.runtime_version)
    rt.cudaMemGetInfo = mem_info
    rt.cudaGetErrorName = lambda err: (cudaError_t.cudaSuccess, cudaError_t(int(err)).name.encode())
    rt.cudaMemcpyKind, rt.cudaStream_t = cudaMemcpyKind, cudaStream_t
    memory = FakeCudart(_standin().gpu)
    for name in ("cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamSynchronize",
                 "cudaStreamDestroy"):
        setattr(rt, name, getattr(memory, name))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []  # a package
    cuda.bindings = bindings
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}


# ======================================================================================================
# the stand-in
# ======================================================================================================

API_VERSIONS = {10: "10.13.3.9", 11: "11.4.0.106"}  # the bindings releases the API tables come from


@dataclass
class StandinConfig:
    trt_version: str = API_VERSIONS[10]
    gpu_name: str = "Stand-in H100"
    compute_capability: tp.Tuple[int, int] = (9, 0)
    total_memory: int = 80 << 30
    driver_version: int = 12080  # CUDA 12.8 driver
    runtime_version: int = 12090
    cuda_error: tp.Optional[str] = None  # e.g. "cudaErrorNoDevice", "cudaErrorInsufficientDriver"


@dataclass
class TensorRTStandin:
    """One installed stand-in: its device, the builds it ran, the errors TensorRT logged."""

    config: StandinConfig = field(default_factory=StandinConfig)
    api: int = 10  # which TensorRT's API this stand-in models: 10 (10.13) or 11 (11.4)

    def __post_init__(self) -> None:
        if self.api not in API_ENUMS:
            raise ValueError(f"the stand-in models TensorRT 10 and 11, not {self.api}")
        if self.api != 10 and self.config.trt_version == API_VERSIONS[10]:
            self.config.trt_version = API_VERSIONS[self.api]
        self.enums = _api_enums(self.api)
        for name, cls in self.enums.items():
            setattr(self, name, cls)
        self.gpu = FakeGPU(self.config.total_memory)
        self.builds: tp.List[tp.Dict[str, tp.Any]] = []
        self.errors: tp.List[str] = []
        self.loggers: tp.List[ILogger] = []
        self.executions = self.contexts = 0
        self.trt = _tensorrt_module(self.config.trt_version, self.enums)

    @property
    def device_key(self) -> str:
        return "sm_%d%d" % tuple(self.config.compute_capability)

    def cuda_error_code(self) -> int:
        return int(cudaError_t[self.config.cuda_error]) if self.config.cuda_error else SUCCESS

    def set(self, **changes: tp.Any) -> None:
        """Change what the machine reports (another GPU, another TensorRT, no device...)."""
        for k, v in changes.items():
            setattr(self.config, k, v)
        self.trt.__version__ = self.config.trt_version

    # -- installation ---------------------------------------------------------------------------------
    def install(self, monkeypatch) -> "TensorRTStandin":
        """``tensorrt`` and cuda-python's ``cuda.bindings.runtime`` in ``sys.modules`` (the seams the project
        imports through: ``jasco_runtime.tensorrt.device.cudart()``), polygraphy's cached logger reset."""
        global _ACTIVE
        import polygraphy.backend.trt.util as trt_util

        _ACTIVE = self
        _reset_polygraphy_imports()
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        for name, module in _cuda_python_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(trt_util, "TRT_LOGGER", None)
        return self

    def uninstall(self) -> None:
        global _ACTIVE
        _reset_polygraphy_imports()
        _ACTIVE = None

    # -- helpers for tests ----------------------------------------------------------------------------
    def build_engines(self, folder: tp.Union[str, Path], **options: tp.Any):
        """Build the folder's engines with the real builder (``jasco_runtime.tensorrt.build``) on this stand-in."""
        from jasco_runtime.export_folder import ExportFolder
        from jasco_runtime.tensorrt.build import BuildOptions, build_folder

        return build_folder(ExportFolder.open(folder), BuildOptions(**options), log=lambda msg: None)

    def snapshot(self) -> tp.Dict[str, int]:
        """Live device allocations, bytes and streams (to compare before/after)."""
        return {"allocations": self.gpu.live_allocations, "bytes": self.gpu.live_bytes, "streams": self.gpu.live_streams}


def _reset_polygraphy_imports() -> None:
    """polygraphy caches the ``tensorrt`` module in lazy-import objects: forget it, so the next use imports
    whatever ``sys.modules['tensorrt']`` is then (this stand-in, another one, or the real TensorRT)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy") or module is None:
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule":
                cached = object.__getattribute__(value, "__dict__").get("module")
                if getattr(cached, "__name__", "") == "tensorrt":
                    object.__setattr__(value, "module", None)
