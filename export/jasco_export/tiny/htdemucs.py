"""Random htdemucs models in demucs' own Hugging Face format, for offline tests, the demo and benchmarks.

demucs 4.1.0 loads ``get_model('hf://{org}/htdemucs')`` from the hub repo ``{org}/HTDemucs``
(demucs/hf.py): ``htdemucs.yaml`` (the bag: ``models: [sig]``) and ``{sig}.safetensors`` whose metadata
holds the class and its init arguments as JSON (Fractions as ``{"_type": "fraction", ...}``).
:func:`write_htdemucs_repo` writes exactly that into a hub cache, so the exporter loads the tiny separator
with demucs' own loader, as it loads the real one (``htdemucs``: ``adefossez/HTDemucs``).
"""
from __future__ import annotations

import json
import tempfile
import typing as tp
from fractions import Fraction
from pathlib import Path

import torch
import yaml

from .assets import write_hub_repo

SOURCES = ["drums", "bass", "other", "vocals"]

HTDEMUCS_KWARGS: tp.Dict[str, tp.Any] = dict(
    # htdemucs (signature 955717e8): HTDemucs' defaults with the overrides of demucs/grids/mmi.py
    # (dconv_mode 3, depth 4, 5 transformer layers, bottom_channels 512) and its 7.8 s segment.  The real
    # weights carry their own arguments; this preset only sizes random real-scale models.
    sources=SOURCES, audio_channels=2, samplerate=44100, segment=Fraction(39, 5), channels=48, nfft=4096,
    depth=4, dconv_mode=3, t_layers=5, bottom_channels=512, cac=True, wiener_iters=0)

TINY_KWARGS: tp.Dict[str, tp.Any] = dict(
    # CI-sized: same structure (4 levels, cross-transformer, bottom channels, dconv in both), 1.95 s segment
    # (an odd 85995-sample training length, as htdemucs' 343980 is not a multiple of the hop)
    sources=SOURCES, audio_channels=2, samplerate=44100, segment=Fraction(39, 20), channels=4, nfft=4096,
    depth=4, dconv_mode=3, dconv_comp=4, t_layers=2, t_heads=2, bottom_channels=16, cac=True, wiener_iters=0)

PRESETS = {"tiny": TINY_KWARGS, "htdemucs": HTDEMUCS_KWARGS}


def _encode_json(value: tp.Any) -> tp.Any:
    """demucs/hf.py ``_decode_json``'s inverse: Fractions as tagged dicts."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    return value


def build_htdemucs(preset: str = "tiny", seed: int = 0) -> torch.nn.Module:
    """HTDemucs of ``preset`` with demucs' own (random, seeded) initialisation, eval mode."""
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return HTDemucs(**PRESETS[preset]).eval()


def write_htdemucs_repo(cache_dir: tp.Union[str, Path], org: str = "jasco-tiny", preset: str = "tiny", seed: int = 0,
                        sig: str = "0badc0de") -> str:
    """Write a random htdemucs as ``{org}/HTDemucs`` into the hub cache; return its demucs name
    ``hf://{org}/htdemucs`` (what ``jasco-export --separator`` and ``demucs.pretrained.get_model`` take)."""
    from safetensors.torch import save_file

    model = build_htdemucs(preset, seed)
    meta = {"klass": "demucs.htdemucs.HTDemucs", "args": json.dumps([]),
            "kwargs": json.dumps(_encode_json(PRESETS[preset]))}
    with tempfile.TemporaryDirectory(prefix="htdemucs-") as tmp:
        folder = Path(tmp)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / f"{sig}.safetensors"),
                  metadata=meta)
        (folder / "htdemucs.yaml").write_text(yaml.safe_dump({"models": [sig]}))
        write_hub_repo(cache_dir, f"{org}/HTDemucs", folder)
    return f"hf://{org}/htdemucs"
