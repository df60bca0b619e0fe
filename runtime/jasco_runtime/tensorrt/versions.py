"""Which TensorRT and polygraphy this package works with, and the versions it records.

* TensorRT 10.x and 11.x: the engines are strongly typed networks built from the mixed fp16/fp32 ONNX
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11 removed weak typing, keeps the flag and ignores it)
  with the named-tensor API (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), which both
  have (tests/test_tensorrt_bindings.py checks every name against the real 10.13 and 11.4 bindings).  A
  TensorRT 12 is refused: its API has not been checked.
* polygraphy >= 0.53 (builder only; 0.53.6 has explicit TensorRT 11 branches).  Device memory, streams and
  copies go through cuda-python (:mod:`.device`), not polygraphy's ctypes libcudart lookup, which misses the
  CUDA 13 wheels' ``nvidia/cu13/lib``.
* Which wheels: ``jasco-trt[gpu-cu13]`` (tensorrt-cu13, cuda-python 13; NVIDIA driver >= 580) or
  ``jasco-trt[gpu-cu12]`` (tensorrt-cu12, cuda-python 12; older drivers, JetPack 6).  docs/gpu.md.
"""
from __future__ import annotations

import typing as tp

from ..errors import JascoError

TRT_MAJORS = (10, 11)
MIN_TRT = (10, 13)  # strong typing complete from 10.12; 10.13 is the oldest release the API check covers
MIN_POLYGRAPHY = (0, 53)
INSTALL = ("pip install 'jasco-trt[gpu-cu13]' (NVIDIA driver >= 580) or 'jasco-trt[gpu-cu12]' (older drivers; "
           "JetPack ships tensorrt)")


class TensorRTUnavailable(JascoError, RuntimeError):
    """TensorRT, polygraphy or a CUDA device is not usable here; the message says why and what to install."""


def _parse(version: str) -> tp.Tuple[int, ...]:
    out = []
    for part in str(version).split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def require_tensorrt():
    """The ``tensorrt`` module if it is a TensorRT 10.x (>= 10.13) or 11.x, else :class:`TensorRTUnavailable`."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising something else
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt: {exc}); {INSTALL}") from None
    version = str(getattr(trt, "__version__", "unknown"))
    parsed = _parse(version) or (0,)
    if parsed[0] not in TRT_MAJORS or parsed[:2] < MIN_TRT:
        newer = parsed[0] > max(TRT_MAJORS)
        raise TensorRTUnavailable(
            f"TensorRT {version} found; jasco-trt supports TensorRT 10.x (>= 10.13) and 11.x"
            + (" (a newer major's API has not been checked against this project)" if newer else "")
            + " — pip install 'tensorrt-cu13>=10.13,<12' (or tensorrt-cu12 for drivers older than 580)")
    return trt


def require_polygraphy():
    """The ``polygraphy`` package if it is >= 0.53, else :class:`TensorRTUnavailable`."""
    try:
        import polygraphy
    except Exception as exc:
        raise TensorRTUnavailable(f"polygraphy is not installed (import polygraphy: {exc}); {INSTALL}") from None
    version = str(getattr(polygraphy, "__version__", "0"))
    if _parse(version)[:2] < MIN_POLYGRAPHY:
        raise TensorRTUnavailable(f"polygraphy {version} found; jasco-trt needs polygraphy>=0.53 (older releases do not "
                                  "find libcudart in the pip CUDA wheels) — pip install -U 'polygraphy>=0.53'")
    return polygraphy


def tensorrt_versions() -> tp.Dict[str, str]:
    """tensorrt / polygraphy / cuda-python versions that are importable here (for records and reports)."""
    import importlib.metadata as md

    out: tp.Dict[str, str] = {}
    for module, dists in (("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")), ("polygraphy", ("polygraphy",)),
                          ("cuda-python", ("cuda-python", "cuda-bindings"))):
        for dist in dists:
            try:
                out[module] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
    try:  # JetPack installs tensorrt without pip metadata
        import tensorrt as trt

        out["tensorrt"] = str(trt.__version__)
    except Exception:
        pass
    return out
