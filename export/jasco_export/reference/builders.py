"""Build a JASCO flow model (with its conditioners) from a :class:`JascoConfig`.

Mirrors audiocraft/models/builders.py ``get_jasco_model`` + ``get_conditioner_provider``: the same
modules under the same names, so ``state_dict()`` keys equal a release checkpoint's.
"""
from __future__ import annotations

import typing as tp

from torch import nn

from .conditioners import (ChordsConditioner, CompressionModel, ConditionProvider, DrumsConditioner,
                           MelodyConditioner, T5Conditioner)
from .config import JascoConfig
from ..errors import CheckpointError
from .flow_model import FlowModel

T5_DIMS = {  # audiocraft T5Conditioner.MODELS_DIMS, used when T5 itself is not loaded (meta builds)
    "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
    "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
    "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096,
}


def build_conditioners(cfg: JascoConfig, t5_dim: tp.Optional[int] = None) -> ConditionProvider:
    """One conditioner per ``conditioners`` entry of the xp.cfg (audiocraft get_conditioner_provider)."""
    out_dim = cfg.transformer.dim
    conditioners: tp.Dict[str, nn.Module] = {}
    for name, c in cfg.conditioners.items():
        a = c.args
        if c.model == "t5":
            dim = t5_dim if t5_dim is not None else T5_DIMS.get(str(a["name"]))
            if dim is None:
                raise CheckpointError(f"unknown T5 width for {a['name']!r}; load T5 to read it from its config")
            conditioners[name] = T5Conditioner(str(a["name"]), dim, out_dim)
        elif c.model == "chords_emb":
            conditioners[name] = ChordsConditioner(int(a["card"]), int(a["out_dim"]))
        elif c.model == "drum_latents":
            conditioners[name] = DrumsConditioner(
                int(a["out_dim"]), latent_dim=int(a.get("compression_model_latent_dim", cfg.latent_dim)),
                blurring_factor=int(a.get("blurring_factor", 3)), seq_len=cfg.n_frames)
        elif c.model == "melody":
            conditioners[name] = MelodyConditioner(int(a["card"]), int(a["out_dim"]))
        else:
            raise CheckpointError(f"conditioner model {c.model!r} ({name}) is not part of JASCO; unsupported")
    return ConditionProvider(conditioners)


def build_flow_model(cfg: JascoConfig, t5_dim: tp.Optional[int] = None,
                     compression_model: tp.Optional[nn.Module] = None) -> FlowModel:
    """The full ``FlowMatchingModel`` module tree; attach the EnCodec as the drums conditioner's copy."""
    provider = build_conditioners(cfg, t5_dim)
    model = FlowModel(cfg, provider)
    if compression_model is not None:
        if not isinstance(compression_model, CompressionModel):
            compression_model = CompressionModel(compression_model)
        if "self_wav" in provider.conditioners:
            provider.conditioners["self_wav"].compression_model = compression_model
    return model.eval()
