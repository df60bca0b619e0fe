"""TensorRT engine through the ``tensorrt`` 10.x / 11.x runtime; device memory, the stream and the copies
through :mod:`jasco_runtime.tensorrt.device` (cuda-python; no torch, no polygraphy at run time).

Memory: every I/O tensor gets one device buffer, allocated when the engine opens at the optimisation
profile's max shape and reused for smaller shapes (never reallocated).  Device buffers have no destructor,
so :meth:`TensorRTEngine.close` (or ``with``) frees them, and every :meth:`to_device` tensor is freed by its
owner (``DeviceTensor.free``) or at ``close``; ``close`` releases every resource even when one release fails
(after a sticky CUDA fault every call fails), then raises the first error.

Checks TensorRT leaves to the caller: each input's dtype against ``get_tensor_dtype`` (TensorRT reads raw
bytes), ``set_input_shape``'s result (False outside the profile), ``set_tensor_address``'s result, output
shapes with no -1 left, and ``execute_async_v3``'s result.  Engines are not portable: a plan built for
another GPU or TensorRT version is refused from the manifest's record and from TensorRT itself.
"""
from __future__ import annotations

import contextlib
import logging
import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError, JascoError
from .base import DeviceArray, Engine, Traffic, Workspace, check_write

logger = logging.getLogger(__name__)
REBUILD = "rebuild them on this machine with `jasco-run build-engines ENGINES_DIR`"


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


def _current_gpu() -> tp.Tuple[tp.Optional[str], tp.Optional[str]]:
    """(name, compute capability) of device 0; (None, None) with a warning saying why when it cannot be read."""
    from ..tensorrt.device import current_device

    try:
        dev = current_device()
    except JascoError as exc:
        logger.warning("cannot read the GPU's compute capability (%s); the engines' \"built for this GPU\" check is "
                       "skipped, TensorRT's own plan check still applies", exc)
        return None, None
    return dev.name, dev.compute_capability


class DeviceTensor:
    """A host array copied to the device once (e.g. a generation's conditions) and bound without copying
    again.  Free it when done (:meth:`free`); the engine frees any left at ``close``."""

    def __init__(self, owner: "TensorRTEngine", array: np.ndarray):
        from ..tensorrt import device

        arr = np.ascontiguousarray(array)
        self.owner, self.shape, self.dtype = owner, tuple(arr.shape), arr.dtype
        self.buffer = device.allocate(arr.nbytes)
        try:
            device.copy_host_to_device(self.buffer, arr, owner.stream)
        except BaseException:
            self.buffer.free()
            raise
        owner.traffic.allocations += 1
        owner.traffic.h2d += arr.nbytes

    @property
    def ptr(self) -> int:
        if self.buffer is None:
            raise RuntimeError("this device tensor was freed")
        return int(self.buffer.ptr)

    def free(self) -> None:
        if self.buffer is not None:
            buffer, self.buffer = self.buffer, None
            self.owner._tensors.discard(self)
            buffer.free()


class _DeviceOutput:
    """An output left on the device by ``run_bound``; ``numpy()`` copies it to the host.  Valid until the
    engine's next call (the output buffers are reused)."""

    def __init__(self, buffer: tp.Any, shape: tp.Tuple[int, ...], dtype: np.dtype, stream: tp.Any,
                 traffic: tp.Optional[Traffic] = None):
        self.buffer, self.shape, self.dtype, self.stream, self.traffic = buffer, shape, dtype, stream, traffic

    def numpy(self) -> np.ndarray:
        from ..tensorrt import device

        out = device.copy_device_to_host(np.empty(self.shape, dtype=self.dtype), self.buffer, self.stream)
        if self.traffic is not None:
            self.traffic.d2h += out.nbytes
        return out


class DeviceWorkspace(Workspace):
    """Device arrays of one loop, each its own ``cudaMalloc`` (256-byte aligned, as ``set_tensor_address``
    needs), and the stream their work is queued on (the engine's: engines running on the workspace's arrays
    queue on it too, so their calls are ordered without a host synchronisation).  ``close`` frees every array."""

    def __init__(self, owner: "TensorRTEngine"):
        if owner.stream is None:
            raise RuntimeError(f"{owner.name}: the engine was closed")
        self.owner, self.stream = owner, owner.stream
        self._buffers: tp.List[tp.Any] = []

    def empty(self, shape: tp.Sequence[int], dtype: tp.Any = np.float32) -> DeviceArray:
        from ..tensorrt import device

        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        buf = device.allocate(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        self._buffers.append(buf)
        self.owner.traffic.allocations += 1
        return DeviceArray(buf, int(buf.ptr), shape, dtype)

    def upload(self, array: np.ndarray) -> DeviceArray:
        from ..tensorrt import device

        host = np.ascontiguousarray(array)
        out = self.empty(host.shape, host.dtype)
        device.copy_host_to_device(out.memory, host, self.stream)
        self.owner.traffic.h2d += host.nbytes
        return out

    def write(self, array: DeviceArray, host: np.ndarray) -> None:
        from ..tensorrt import device

        if array.ptr != int(array.memory.ptr) or array.nbytes != array.memory.nbytes:
            raise ValueError("write a whole workspace array, not a view of one")
        check_write(array, host)
        device.copy_host_to_device(array.memory, host, self.stream)
        self.owner.traffic.h2d += host.nbytes

    def download(self, array: DeviceArray) -> np.ndarray:
        from ..tensorrt import device

        if array.ptr != int(array.memory.ptr):
            raise ValueError("download a whole workspace array, not a view of one")
        out = device.copy_device_to_host(np.empty(array.shape, array.dtype), array.memory, self.stream)
        self.owner.traffic.d2h += out.nbytes
        return out

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Wait for the work queued on the stream (a solve that failed or was cancelled mid-loop may have kernels
        in flight on these buffers), then free every buffer, even when the wait fails (a sticky fault)."""
        buffers, self._buffers = self._buffers, []
        errors = []
        if buffers:
            try:
                self.stream.synchronize()
            except Exception as exc:  # noqa: BLE001 - the buffers are freed all the same, the error raised after
                errors.append(exc)
        for buf in buffers:
            try:
                buf.free()
            except Exception as exc:  # noqa: BLE001 - every buffer is freed, the first error raised after
                errors.append(exc)
        if errors:
            raise errors[0]


_LOGGER: tp.List[tp.Any] = []


def _trt_logger(trt: tp.Any) -> tp.Any:
    """One TensorRT logger per process (TensorRT keeps the first one it is given): polygraphy's, which the
    builder's loaders use, when polygraphy is installed; else one of our own."""
    try:
        from polygraphy.backend.trt import util as trt_util
    except ImportError:
        if not _LOGGER:
            _LOGGER.append(trt.Logger(trt.Logger.WARNING))
        return _LOGGER[0]
    return trt_util.get_trt_logger()


def _no_gpu_hint(exc: BaseException) -> str:
    return (f"TensorRT could not start on this GPU ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "the driver must support TensorRT's CUDA major (nvidia-smi: driver >= 580 for tensorrt-cu13, else "
            "tensorrt-cu12), or use --backend onnxruntime")


class TensorRTEngine(Engine):
    on_gpu = True
    device = "cuda"

    def __init__(self, path: Path, name: str, expected_device: tp.Optional[tp.Mapping[str, tp.Any]] = None):
        from ..tensorrt import device
        from ..tensorrt.versions import TensorRTUnavailable, require_tensorrt

        try:
            trt = require_tensorrt()
            device.cudart()
        except TensorRTUnavailable as exc:
            raise InputError(f"the TensorRT backend is not usable here: {exc} (or use --backend onnxruntime)") from None
        if not Path(path).is_file():
            raise InputError(f"TensorRT engine {path} is missing; {REBUILD}")
        self.name = name
        self.traffic = Traffic()  # what this engine copied between host and device (the benchmarks report it per NFE)
        self._trt = trt
        self._buffers: tp.Dict[str, tp.Any] = {}
        self._tensors: tp.Set[DeviceTensor] = set()
        self.stream = None
        self.context = self.engine = self._runtime = None
        check_engine_device(expected_device, str(trt.__version__), *_current_gpu())
        try:
            runtime = trt.Runtime(_trt_logger(trt))
        except TypeError as exc:  # pybind11: "factory function returned nullptr" (CUDA did not start)
            raise InputError(_no_gpu_hint(exc)) from None
        engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise InputError(f"{path} does not load with TensorRT {trt.__version__} on this GPU (built for another "
                             f"GPU or TensorRT version?); {REBUILD}")
        self.engine, self._runtime = engine, runtime
        self.context = engine.create_execution_context()
        if self.context is None:
            self.close()
            raise InputError(f"TensorRT could not create an execution context for {name} (out of device memory? "
                             "close other GPU processes, or rebuild with `jasco-run build-engines --max-batch N` "
                             "for smaller activations)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.whole_inputs = frozenset(n for n in self.input_names  # no dynamic axis 0 in the network: no batch axis
                                      if len(engine.get_tensor_shape(n)) == 0 or int(engine.get_tensor_shape(n)[0]) != -1)
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profile = {n: tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(n, 0))
                        for n in self.input_names}
        try:
            self.stream = device.create_stream()
            self._allocate()
        except BaseException:
            self.close()
            raise

    # -- memory -------------------------------------------------------------------------------------
    def _allocate(self) -> None:
        """One buffer per I/O tensor at the profile's max shape (outputs: their shape at max inputs)."""
        from ..tensorrt import device

        for name in self.input_names:
            self._set_shape(name, self.profile[name][2])
        shapes = {n: self.profile[n][2] for n in self.input_names}
        shapes.update({n: self._output_shape(n) for n in self.output_names})
        for name, shape in shapes.items():
            self._buffers[name] = device.allocate(int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize)

    @property
    def max_batch(self) -> int:
        """Rows per call this engine takes (axis 0 of its first input's profile)."""
        return int(self.profile[self.input_names[0]][2][0])

    def close(self) -> None:
        """Free every device buffer and the stream, and drop the execution context and the engine (their
        activation memory and weights are freed when the last reference goes: a caller still holding this
        object must not keep a graph's weights on the GPU next to the next graph's).  Every resource is
        released even when one release fails; the first error is raised after.  Idempotent."""
        errors: tp.List[BaseException] = []

        def release(fn: tp.Callable[[], None]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - collected, the first is raised once all are released
                errors.append(exc)

        for t in list(self._tensors):
            release(t.free)
        for buf in self._buffers.values():
            release(buf.free)
        self._buffers.clear()
        if self.stream is not None:
            stream, self.stream = self.stream, None
            release(stream.close)
        self.context = None  # context before engine before runtime (TensorRT's destruction order)
        self.engine = None
        self._runtime = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "TensorRTEngine":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()

    def to_device(self, array: np.ndarray) -> DeviceTensor:
        """A device copy of ``array`` that ``run_bound`` binds without copying again (free it when done)."""
        if self.stream is None:
            raise RuntimeError(f"{self.name}: the engine was closed")
        t = DeviceTensor(self, array)
        self._tensors.add(t)
        return t

    # -- execution ----------------------------------------------------------------------------------
    def _set_shape(self, name: str, shape: tp.Tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, tuple(int(d) for d in shape)):
            mn, _, mx = self.profile[name]
            raise InputError(f"{self.name}: input {name} of shape {list(shape)} is outside the engine's optimisation "
                             f"profile (min {list(mn)}, max {list(mx)}); rebuild with `jasco-run build-engines "
                             "--max-batch N` for larger batches")

    def _output_shape(self, name: str) -> tp.Tuple[int, ...]:
        shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            missing = self.context.infer_shapes()
            raise RuntimeError(f"{self.name}: TensorRT cannot size output {name} ({list(shape)}); unspecified: {missing}")
        return shape

    def _bind(self, name: str, ptr: int) -> None:
        if not self.context.set_tensor_address(name, int(ptr)):
            raise RuntimeError(f"{self.name}: TensorRT refused the device address of {name}")

    def _execute(self, inputs: tp.Mapping[str, tp.Any]) -> tp.Dict[str, _DeviceOutput]:
        from ..tensorrt import device

        if self.stream is None:
            raise RuntimeError(f"{self.name}: the engine was closed")
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        for name in self.input_names:
            value, want = inputs[name], self.dtypes[name]
            if isinstance(value, DeviceTensor):
                if value.owner is not self or value.buffer is None:
                    raise ValueError(f"{self.name}: input {name} is a device tensor of another engine or already freed")
                shape, dtype = value.shape, value.dtype
            else:
                value = np.ascontiguousarray(value)
                shape, dtype = tuple(value.shape), value.dtype
            if dtype != want:
                raise ValueError(f"{self.name}: input {name} is {dtype}, the engine expects {want}")
            self._set_shape(name, shape)
            if isinstance(value, DeviceTensor):
                self._bind(name, value.ptr)
            else:
                buf = self._buffers[name]  # the profile's max: every shape set_input_shape accepted fits
                device.copy_host_to_device(buf, value, self.stream)
                self.traffic.h2d += value.nbytes
                self._bind(name, buf.ptr)
        outs = {}
        for name in self.output_names:
            shape = self._output_shape(name)
            buf = self._buffers[name]
            self._bind(name, buf.ptr)
            outs[name] = _DeviceOutput(buf, shape, self.dtypes[name], self.stream, self.traffic)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT execution of {self.name} failed (see the TensorRT error above)")
        return outs

    def run(self, feeds: tp.Mapping[str, tp.Any]) -> tp.Dict[str, np.ndarray]:
        return {n: out.numpy() for n, out in self._execute(feeds).items()}

    def workspace(self) -> DeviceWorkspace:
        return DeviceWorkspace(self)

    def run_device(self, inputs: tp.Mapping[str, DeviceArray], outputs: tp.Mapping[str, DeviceArray],
                   workspace: Workspace) -> None:
        """Bind device arrays as the call's inputs and outputs and queue it on the workspace's stream: no copy,
        no allocation.  Shapes are checked against the profile and the outputs TensorRT infers."""
        if self.stream is None:
            raise RuntimeError(f"{self.name}: the engine was closed")
        if not isinstance(workspace, DeviceWorkspace):
            raise TypeError(f"{self.name}: run_device needs a TensorRT device workspace")
        missing = (set(self.input_names) - set(inputs)) | (set(self.output_names) - set(outputs))
        if missing:
            raise ValueError(f"{self.name}: missing device arrays for {sorted(missing)}")
        for name in self.input_names:
            arr = inputs[name]
            if arr.dtype != self.dtypes[name]:
                raise ValueError(f"{self.name}: input {name} is {arr.dtype}, the engine expects {self.dtypes[name]}")
            self._set_shape(name, arr.shape)
            self._bind(name, arr.ptr)
        for name in self.output_names:
            arr, shape = outputs[name], self._output_shape(name)
            if tuple(arr.shape) != shape or arr.dtype != self.dtypes[name]:
                raise ValueError(f"{self.name}: output {name} is {list(shape)} {self.dtypes[name]}, its array "
                                 f"{list(arr.shape)} {arr.dtype}")
            self._bind(name, arr.ptr)
        if not self.context.execute_async_v3(workspace.stream.handle):
            raise RuntimeError(f"TensorRT execution of {self.name} failed (see the TensorRT error above)")

    @contextlib.contextmanager
    def bind(self, arrays: tp.Mapping[str, np.ndarray]) -> tp.Iterator[tp.Dict[str, "DeviceTensor"]]:
        """:meth:`to_device` copies of ``arrays``, freed when the block ends (exceptions and signals included)."""
        bound: tp.Dict[str, DeviceTensor] = {}
        try:
            for k, v in arrays.items():
                bound[k] = self.to_device(v)
            yield bound
        finally:
            for t in bound.values():
                t.free()

    def run_bound(self, inputs: tp.Mapping[str, tp.Any]) -> tp.Dict[str, _DeviceOutput]:
        """Inputs may be numpy arrays or :meth:`to_device` tensors; outputs stay on the device."""
        return self._execute(inputs)
