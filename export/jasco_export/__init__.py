"""jasco_export — the torch side of jasco-trt.

A faithful PyTorch port of audiocraft's JASCO inference path (the numerical reference), release
checkpoint loading, tiny offline models, ONNX / TensorRT export and the parity gate.
"""
from .reference.config import JascoConfig, parse_xp_cfg
from .errors import CheckpointError, InputError, JascoError, ModelNotFoundError

__all__ = ["JASCO", "get_pretrained", "JascoConfig", "parse_xp_cfg", "JascoError", "InputError",
           "CheckpointError", "ModelNotFoundError"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing the package stays cheap
    if name in ("JASCO", "get_pretrained"):
        from .reference import jasco

        return getattr(jasco, name)
    raise AttributeError(name)
