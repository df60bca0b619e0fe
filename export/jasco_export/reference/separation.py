"""Opt-in drum-stem separation with htdemucs (audiocraft DrumsConditioner._get_drums_stem).

audiocraft always separates the drums input with ``demucs.pretrained.get_model('htdemucs')``.  Here the
drums input is taken as an already separated stem by default; ``separate_drums`` runs the same
separation when the ``demucs`` package and its weights are available, and otherwise says what is missing.
"""
from __future__ import annotations

import typing as tp

import torch

from ..errors import JascoError

_MODEL: tp.Dict[str, tp.Any] = {}


class SeparationUnavailable(JascoError):
    """demucs or its htdemucs weights are not available."""


def load_demucs(name: str = "htdemucs", device: str = "cpu") -> tp.Any:
    if name in _MODEL:
        return _MODEL[name]
    try:
        from demucs import pretrained
    except ImportError as exc:
        raise SeparationUnavailable("drum separation needs the `demucs` package (`pip install demucs`) and its "
                                    "htdemucs weights; or pass an already separated drum stem") from exc
    try:
        model = pretrained.get_model(name).to(device).eval()
    except Exception as exc:  # weights missing offline, download refused, ...
        raise SeparationUnavailable(f"demucs could not load {name!r} ({type(exc).__name__}); put its weights in the "
                                    "torch hub cache (~/.cache/torch/hub/checkpoints) or pass a drum stem") from exc
    _MODEL[name] = model
    return model


@torch.no_grad()
def separate_drums(wav: torch.Tensor, sample_rate: int, target_rate: int = 32000, device: str = "cpu") -> torch.Tensor:
    """[1, C, T] mixture → [1, 1, T'] drum stem at ``target_rate`` (demucs convert_audio + apply_model)."""
    model = load_demucs(device=device)
    from demucs.apply import apply_model
    from demucs.audio import convert_audio

    x = convert_audio(wav, sample_rate, model.samplerate, model.audio_channels)
    stems = apply_model(model, x, device=device)
    drums = stems[:, model.sources.index("drums")]
    return convert_audio(drums, model.samplerate, target_rate, 1)
