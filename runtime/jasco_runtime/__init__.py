"""jasco_runtime — torch-free JASCO inference: numpy + ONNX Runtime or TensorRT.

Importing this package needs only numpy (soundfile, tokenizers and a backend are imported when used).
"""
from .errors import InputError, JascoError

__all__ = ["JascoPipeline", "GenerationResult", "JascoError", "InputError"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy, so `import jasco_runtime` pulls in no backend
    if name in ("JascoPipeline", "GenerationResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
