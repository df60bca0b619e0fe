"""The CUDA device, through cuda-python (``cuda.bindings.runtime``): the one place that asks "is there a GPU,
which one", and the one owner of device memory, streams and copies.

Only ``cudaErrorNoDevice`` means "no GPU".  Any other error (typically ``cudaErrorInsufficientDriver``
when cuda-python 13 meets a CUDA 12 driver, or when no NVIDIA driver is installed at all) is reported as it
is, because the fix is an install, not a CPU fallback.

Memory API (every call raises :class:`CudaError` naming the CUDA error):

* :func:`allocate` (``cudaMalloc``, 256-byte aligned) → :class:`DeviceBuffer`; :func:`free` / ``buffer.free()``
  (idempotent);
* :func:`create_stream` → :class:`Stream`; ``stream.synchronize()`` / :func:`synchronize`; ``stream.close()``;
* :func:`copy_host_to_device` (stream-ordered; the host array may be reused when it returns, CUDA stages
  pageable memory), :func:`copy_device_to_host` (returns once the host array holds the data: it synchronises
  the stream), :func:`copy_device_to_device` (stream-ordered);
* :func:`traffic` / :func:`reset_traffic`: allocations, frees, live bytes and bytes copied per direction since
  the last reset, for tests and for "host↔device bytes per vector-field evaluation" on a GPU.

cuda-python of either CUDA major works (12.6+: ``cuda.bindings.runtime``; 12.x older: ``cuda.cudart``); it
reaches the driver directly, so no ``libcudart`` search is involved (polygraphy's misses the CUDA 13 wheels'
``nvidia/cu13/lib``).
"""
from __future__ import annotations

import typing as tp
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import JascoError
from .versions import TensorRTUnavailable

NO_DEVICE = 100  # cudaErrorNoDevice (CUDA runtime API, cudaError_t)


class CudaError(JascoError, RuntimeError):
    """A CUDA runtime call failed for a reason other than "no device"."""


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "9.0"
    total_memory: int  # bytes
    driver: str  # CUDA version the driver supports, "12.8"
    runtime: str  # CUDA runtime cuda-python talks to

    def record(self) -> tp.Dict[str, tp.Any]:
        """What the manifest records about the machine an engine was built on."""
        return {"gpu_name": self.name, "compute_capability": self.compute_capability,
                "total_memory_gb": round(self.total_memory / 2**30, 2), "cuda_driver": self.driver,
                "cuda_runtime": self.runtime}

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return asdict(self)


def cudart():
    """cuda-python's runtime bindings (``cuda.bindings.runtime`` from 12.6, ``cuda.cudart`` before), or
    :class:`TensorRTUnavailable`."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # type: ignore[no-redef]  # cuda-python < 12.6
        return runtime
    except ImportError as exc:
        raise TensorRTUnavailable(f"cuda-python is not installed ({exc}); pip install 'cuda-python>=13,<14' "
                                  "(NVIDIA driver >= 580, with tensorrt-cu13) or 'cuda-python>=12.6,<13' "
                                  "(older drivers, with tensorrt-cu12)") from None


def _code(err: tp.Any) -> int:
    return int(getattr(err, "value", err))


def _name(rt: tp.Any, err: tp.Any) -> str:
    name = getattr(err, "name", None)
    if not name:
        try:
            res = rt.cudaGetErrorName(err)
            name = res[1] if isinstance(res, tuple) else res
        except Exception:
            name = None
    if isinstance(name, (bytes, bytearray)):
        name = name.decode("utf-8", "replace")
    return f"{name or 'cudaError'} ({_code(err)})"


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def check(rt: tp.Any, result: tp.Any, what: str) -> tp.Tuple[tp.Any, ...]:
    """Unpack a cuda-python ``(err, *values)`` result, raising :class:`CudaError` on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if _code(err) != 0:
        raise CudaError(f"{what} failed: {_name(rt, err)}")
    return tuple(values)


def device_count() -> int:
    """Visible CUDA devices; 0 only for ``cudaErrorNoDevice``, :class:`CudaError` for any other error."""
    rt = cudart()
    err, n = rt.cudaGetDeviceCount()
    if _code(err) == NO_DEVICE:
        return 0
    if _code(err) != 0:
        hint = (" — no NVIDIA driver, or one older than the CUDA runtime of cuda-python; install cuda-python of the "
                "driver's CUDA major (nvidia-smi shows it), e.g. 'cuda-python>=12.6,<13' for drivers older than "
                "580") if _code(err) == 35 else ""
        raise CudaError(f"cudaGetDeviceCount failed: {_name(rt, err)}{hint}")
    return int(n)


def current_device(index: int = 0) -> CudaDevice:
    """Device ``index``; :class:`TensorRTUnavailable` when there is none, :class:`CudaError` on other errors."""
    rt = cudart()
    n = device_count()
    if n == 0:
        raise TensorRTUnavailable("no CUDA device is visible (cudaErrorNoDevice); TensorRT needs an NVIDIA GPU")
    if index >= n:
        raise TensorRTUnavailable(f"CUDA device {index} requested, {n} visible")
    (prop,) = check(rt, rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    (drv,) = check(rt, rt.cudaDriverGetVersion(), "cudaDriverGetVersion")
    (run,) = check(rt, rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return CudaDevice(index, str(name).strip(), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem),
                      _version(int(drv)), _version(int(run)))


def memory_in_use() -> int:
    """Device memory in use (total - free) in bytes, through ``cudaMemGetInfo``."""
    rt = cudart()
    free, total = check(rt, rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)


def gpu_unavailable_reason() -> tp.Optional[str]:
    """None when a CUDA device is usable here, else why not (one line)."""
    try:
        current_device()
    except JascoError as exc:
        return str(exc)
    return None


# ======================================================================================================
# device memory, streams and copies (the one owner: the TensorRT backend and the pipeline go through here)
# ======================================================================================================

MEMORY_ALLOCATION = 2  # cudaErrorMemoryAllocation


@dataclass
class Traffic:
    """What this process asked of the device since the last :func:`reset_traffic`."""

    allocations: int = 0
    frees: int = 0
    live_bytes: int = 0  # allocated through :func:`allocate` and not freed
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    d2d_bytes: int = 0
    h2d_copies: int = 0
    d2h_copies: int = 0
    d2d_copies: int = 0

    def to_dict(self) -> tp.Dict[str, int]:
        return asdict(self)


_TRAFFIC = Traffic()


def traffic() -> Traffic:
    """A copy of the counters (allocations, frees, live bytes, bytes and copies per direction)."""
    return Traffic(**_TRAFFIC.to_dict())


def reset_traffic() -> None:
    """Zero the copy and allocation counters (``live_bytes`` keeps counting what is still allocated)."""
    live = _TRAFFIC.live_bytes
    for k in _TRAFFIC.to_dict():
        setattr(_TRAFFIC, k, 0)
    _TRAFFIC.live_bytes = live


@dataclass(eq=False)
class DeviceBuffer:
    """``nbytes`` of device memory at ``ptr`` (from :func:`allocate`); free it with :meth:`free`."""

    ptr: int
    nbytes: int
    freed: bool = field(default=False)

    def free(self) -> None:
        """``cudaFree``; idempotent.  The buffer counts as freed even when CUDA reports an error (after a
        sticky fault every call fails; retrying would fail again)."""
        if self.freed:
            return
        self.freed = True
        _TRAFFIC.frees += 1
        _TRAFFIC.live_bytes -= self.nbytes
        rt = cudart()
        check(rt, rt.cudaFree(self.ptr), f"cudaFree of {self.nbytes} bytes")

    def _live(self, what: str) -> int:
        if self.freed:
            raise CudaError(f"{what}: the device buffer was freed")
        return self.ptr


@dataclass(eq=False)
class Stream:
    """A CUDA stream; ``handle`` is what ``execute_async_v3`` takes.  Close it with :meth:`close`."""

    _stream: tp.Any
    closed: bool = False

    @property
    def handle(self) -> int:
        if self.closed:
            raise CudaError("the CUDA stream was closed")
        return int(self._stream)

    def synchronize(self) -> None:
        rt = cudart()
        check(rt, rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """``cudaStreamDestroy`` (after the work queued on it); idempotent."""
        if self.closed:
            return
        self.closed = True
        rt = cudart()
        check(rt, rt.cudaStreamDestroy(self._stream), "cudaStreamDestroy")


def allocate(nbytes: int) -> DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``: 256-byte aligned, what ``set_tensor_address`` needs)."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ValueError(f"cannot allocate {nbytes} bytes")
    rt = cudart()
    result = rt.cudaMalloc(max(nbytes, 1))
    if _code(result[0]) == MEMORY_ALLOCATION:
        raise CudaError(f"out of device memory allocating {nbytes / 2**20:.1f} MiB (cudaErrorMemoryAllocation); "
                        "free other GPU processes or use smaller batches (jasco-run build-engines --max-batch)")
    (ptr,) = check(rt, result, f"cudaMalloc of {nbytes} bytes")
    _TRAFFIC.allocations += 1
    _TRAFFIC.live_bytes += nbytes
    return DeviceBuffer(int(ptr), nbytes)


def free(buffer: DeviceBuffer) -> None:
    """Free ``buffer`` (same as ``buffer.free()``)."""
    buffer.free()


def create_stream() -> Stream:
    rt = cudart()
    (stream,) = check(rt, rt.cudaStreamCreate(), "cudaStreamCreate")
    return Stream(stream)


def synchronize(stream: Stream) -> None:
    stream.synchronize()


def _kind(rt: tp.Any, name: str) -> tp.Any:
    return getattr(rt.cudaMemcpyKind, name)


def _host(array: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError(f"{what}: the host array must be a C-contiguous numpy array")
    return array


def copy_host_to_device(dst: DeviceBuffer, host: np.ndarray, stream: Stream) -> None:
    """Copy ``host`` (C-contiguous) into the start of ``dst`` on ``stream``."""
    host = _host(host, "copy_host_to_device")
    if host.nbytes > dst.nbytes:
        raise ValueError(f"copy_host_to_device: {host.nbytes} bytes do not fit a {dst.nbytes}-byte device buffer")
    rt = cudart()
    check(rt, rt.cudaMemcpyAsync(dst._live("copy_host_to_device"), host.ctypes.data, host.nbytes,
                                 _kind(rt, "cudaMemcpyHostToDevice"), stream._stream), "cudaMemcpyAsync host→device")
    _TRAFFIC.h2d_bytes += host.nbytes
    _TRAFFIC.h2d_copies += 1


def copy_device_to_host(host: np.ndarray, src: DeviceBuffer, stream: Stream) -> np.ndarray:
    """Copy the first ``host.nbytes`` of ``src`` into ``host`` (C-contiguous) after the work queued on
    ``stream``; returns ``host`` once it holds the data (the stream is synchronised)."""
    host = _host(host, "copy_device_to_host")
    if not host.flags.writeable:
        raise ValueError("copy_device_to_host: the host array is read-only")
    if host.nbytes > src.nbytes:
        raise ValueError(f"copy_device_to_host: {host.nbytes} bytes asked of a {src.nbytes}-byte device buffer")
    rt = cudart()
    check(rt, rt.cudaMemcpyAsync(host.ctypes.data, src._live("copy_device_to_host"), host.nbytes,
                                 _kind(rt, "cudaMemcpyDeviceToHost"), stream._stream), "cudaMemcpyAsync device→host")
    stream.synchronize()
    _TRAFFIC.d2h_bytes += host.nbytes
    _TRAFFIC.d2h_copies += 1
    return host


def copy_device_to_device(dst: DeviceBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    """Copy the first ``nbytes`` of ``src`` to the start of ``dst`` on ``stream``."""
    nbytes = int(nbytes)
    if nbytes > src.nbytes or nbytes > dst.nbytes:
        raise ValueError(f"copy_device_to_device: {nbytes} bytes between buffers of {src.nbytes} and {dst.nbytes}")
    rt = cudart()
    check(rt, rt.cudaMemcpyAsync(dst._live("copy_device_to_device"), src._live("copy_device_to_device"), nbytes,
                                 _kind(rt, "cudaMemcpyDeviceToDevice"), stream._stream), "cudaMemcpyAsync device→device")
    _TRAFFIC.d2d_bytes += nbytes
    _TRAFFIC.d2d_copies += 1
