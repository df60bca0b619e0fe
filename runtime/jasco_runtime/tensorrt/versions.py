"""Which TensorRT and polygraphy this package works with, and the versions it records.

* TensorRT 10.x only: the engines are strongly typed networks built from the mixed fp16/fp32 ONNX
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) with the TensorRT 10 named-tensor API
  (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).  TensorRT 11 changed the
  precision and strong-typing rules, so it is refused rather than trusted.
* polygraphy >= 0.53: older releases search ``libcudart`` only on ``LD_LIBRARY_PATH`` and ``/usr``, not in the
  pip CUDA wheels, so a pip-only install could not allocate device memory.
"""
from __future__ import annotations

import typing as tp

from ..errors import JascoError

TRT_MAJOR = 10
MIN_POLYGRAPHY = (0, 53)
INSTALL = "pip install 'jasco-trt[gpu]' (tensorrt-cu12 10.x, polygraphy>=0.53, cuda-python 12.x; JetPack ships tensorrt)"


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
    """The ``tensorrt`` module if it is a TensorRT 10.x, else :class:`TensorRTUnavailable`."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising something else
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt: {exc}); {INSTALL}") from None
    version = str(getattr(trt, "__version__", "unknown"))
    major = (_parse(version) or (0,))[0]
    if major != TRT_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} found; jasco-trt supports TensorRT {TRT_MAJOR}.x only (strongly typed "
                                  f"FP16 engines; TensorRT {major}.x changed those semantics) — install tensorrt-cu12>=10,<11")
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
