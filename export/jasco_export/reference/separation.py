"""Drum-stem separation with htdemucs, by demucs itself (audiocraft DrumsConditioner._get_drums_stem).

audiocraft separates every drums input with ``demucs.pretrained.get_model('htdemucs')`` and
``demucs.apply.apply_model`` at its defaults (audiocraft/modules/jasco_conditioners.py).  This is the
reference the exported ``drums_separator`` graph and the runtime's numpy half
(:mod:`jasco_runtime.separation`) are checked against.  One difference on purpose: apply_model draws its
random shift from Python's global RNG, unseeded in audiocraft; here that RNG is seeded with ``seed``
(default 0) for the call and restored afterwards, so a separation is reproducible and the runtime,
drawing from ``random.Random(seed)``, gets the same shift.
"""
from __future__ import annotations

import random
import typing as tp
from pathlib import Path

import torch

from ..errors import JascoError

_MODELS: tp.Dict[str, tp.Any] = {}
DEFAULT = "htdemucs"


class SeparationUnavailable(JascoError):
    """demucs or its htdemucs weights are not available."""


def load_demucs(name: str = DEFAULT, device: str = "cpu") -> tp.Any:
    """A demucs bag of models: a demucs name (``htdemucs``, ``hf://org/htdemucs``) through demucs' own
    loader, or a ``.safetensors`` file in demucs' Hugging Face format.  Cached per name."""
    if name in _MODELS:
        return _MODELS[name]
    try:
        from demucs import pretrained
        from demucs.apply import BagOfModels
    except ImportError as exc:
        raise SeparationUnavailable("drum separation needs the `demucs` package (`pip install demucs`) and its "
                                    "htdemucs weights; or pass an already separated drum stem") from exc
    try:
        if name.endswith(".safetensors"):
            if not Path(name).is_file():
                raise SeparationUnavailable(f"separator file {name} does not exist; give a demucs .safetensors "
                                            "file, a demucs model name (htdemucs) or none")
            from demucs.hf import load_safetensors_model

            model = BagOfModels([load_safetensors_model(name)])
        else:
            model = pretrained.get_model(name)
    except SeparationUnavailable:
        raise
    except BaseException as exc:  # weights missing offline (demucs calls sys.exit via fatal()), download refused
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SeparationUnavailable(f"demucs could not load {name!r} ({type(exc).__name__}); put its weights in the "
                                    "Hugging Face cache (adefossez/HTDemucs) or the torch hub cache "
                                    "(~/.cache/torch/hub/checkpoints), or pass a drum stem") from exc
    model = model.to(device).eval()
    _MODELS[name] = model
    return model


def single_model(bag: tp.Any) -> torch.nn.Module:
    """The one HTDemucs of a bag (htdemucs is a bag of one model, weight 1 for every source)."""
    models = getattr(bag, "models", [bag])
    if len(models) != 1 or any(w != 1 for w in getattr(bag, "weights", [[1]])[0]):
        raise SeparationUnavailable("the separator must be a single htdemucs model (bags of several models, "
                                    "e.g. htdemucs_ft, are not exported); use htdemucs")
    return models[0]


@torch.no_grad()
def separate_drums(wav: torch.Tensor, sample_rate: int, target_rate: int = 32000, device: str = "cpu",
                   model: tp.Any = None, seed: int = 0) -> torch.Tensor:
    """[B, C, T] mixture → [B, 1, T'] drum stem at ``target_rate`` (demucs convert_audio + apply_model)."""
    model = load_demucs(device=device) if model is None else model
    from demucs.apply import apply_model
    from demucs.audio import convert_audio

    x = convert_audio(wav, sample_rate, model.samplerate, model.audio_channels)
    state = random.getstate()
    random.seed(seed)
    try:
        stems = apply_model(model, x, device=device)
    finally:
        random.setstate(state)
    drums = stems[:, model.sources.index("drums")]
    return convert_audio(drums, model.samplerate, target_rate, 1)
