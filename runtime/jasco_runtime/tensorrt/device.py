"""The CUDA device, through cuda-python: the one place that asks "is there a GPU, which one".

Only ``cudaErrorNoDevice`` means "no GPU".  Any other error (typically ``cudaErrorInsufficientDriver``
when cuda-python 13 meets a CUDA 12 driver) is reported as it is, because the GPU is there and the
fix is an install, not a CPU fallback.
"""
from __future__ import annotations

import typing as tp
from dataclasses import asdict, dataclass

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
        raise TensorRTUnavailable(f"cuda-python is not installed ({exc}); pip install 'cuda-python>=12.6,<13' "
                                  "(the CUDA major of tensorrt-cu12)") from None


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
        hint = (" — the NVIDIA driver is older than the CUDA runtime of cuda-python; install cuda-python of the "
                "driver's CUDA major (nvidia-smi shows it), e.g. 'cuda-python>=12.6,<13'") if _code(err) == 35 else ""
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
