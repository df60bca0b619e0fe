"""Inference backends.  Each one imports its library lazily, so ``jasco_runtime`` imports with numpy only."""
from __future__ import annotations

import importlib.util
import sys
import typing as tp
from pathlib import Path

from ..errors import InputError
from .base import Engine

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


def open_engine(backend: str, files: tp.Dict[str, str], folder: Path, name: str,
                providers: tp.Optional[tp.Sequence[str]] = None, precision: str = "fp32",
                expected_device: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> Engine:
    """Open graph ``name`` with ``backend`` ('onnxruntime' | 'tensorrt').

    ``expected_device``: the manifest's record of the GPU / TensorRT version the engines were built on.
    """
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTEngine

        key = "trt-fp16"
        if key not in files:
            raise InputError(f"no TensorRT engine for {name} in {folder}; build it on this machine with "
                             "`jasco-export --backend trt` (engines are not portable across GPUs/TensorRT versions)")
        return TensorRTEngine(folder / files[key], name, expected_device)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeEngine

        key = f"onnx-{precision}"
        if key not in files and "onnx-fp32" in files:
            key = "onnx-fp32"  # graphs the exporter keeps in fp32 (e.g. drums_encoder)
        if key not in files:
            raise InputError(f"no {precision} ONNX graph for {name} in {folder}; available: {sorted(files)}")
        return OnnxRuntimeEngine(folder / files[key], name, providers)
    raise InputError(f"unknown backend {backend!r}; use one of {BACKENDS}")


__all__ = ["Engine", "open_engine", "available_backends", "BACKENDS"]
