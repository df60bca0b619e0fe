"""jasco_runtime — torch-free JASCO inference: numpy + ONNX Runtime or TensorRT.

Importing this package needs only numpy (soundfile, tokenizers and a backend are imported when used).
"""
__all__ = ["JascoPipeline", "GenerationResult", "JascoError", "InputError"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import jasco_runtime` runs no code (jasco-run installs its signal
    if name in ("JascoPipeline", "GenerationResult"):  # handlers first) and pulls in no backend
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("JascoError", "InputError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(name)
