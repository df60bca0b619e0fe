"""Tiny (or real-size) random JASCO models in the exact release format, for offline tests, demo, benchmarks.

``make_tiny_models(out)`` writes a Hugging Face hub cache under ``out/hub`` holding

- ``jasco-tiny/t5`` — a 2-layer T5 encoder with an offline-built tokenizer,
- ``jasco-tiny/encodec_32khz`` — an EnCodec with encodec_32khz's structure (32 kHz, hop 640, 128-d),
- ``jasco-tiny/chords-drums`` and ``jasco-tiny/chords-drums-melody`` — ``state_dict.bin`` =
  {'best_state', 'xp.cfg', 'version', 'exported'} and ``compression_state_dict.bin`` =
  {'pretrained': 'jasco-tiny/encodec_32khz'}, plus ``chord_to_index_mapping.pkl``,

so loading them runs the same code as loading ``facebook/jasco-chords-drums-400M`` with
``HF_HUB_CACHE=out/hub HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import logging
import pickle
import shutil
import tempfile
import typing as tp
from pathlib import Path

import torch
import yaml

from ..reference.builders import build_flow_model
from ..reference.conditioners import CompressionModel
from ..reference.config import parse_xp_cfg

logger = logging.getLogger(__name__)

VARIANTS = {"chords-drums": False, "chords-drums-melody": True}  # name → has melody

PRESETS: tp.Dict[str, tp.Dict[str, tp.Any]] = {
    # CI-sized: seconds to build, export and run
    "tiny": {"org": "jasco-tiny", "arch": dict(dim=64, num_heads=4, num_layers=2),
             "t5": dict(d_model=32, num_layers=2, num_heads=2, d_ff=64, d_kv=16),
             "encodec": dict(num_filters=8, codebook_size=64)},
    # the real 400M architecture (shared/spec, model_scale=small) with random weights, t5-base-sized T5
    # and encodec_32khz-sized EnCodec: for scale tests and benchmarks (no download)
    "400m": {"org": "jasco-random-400m", "arch": dict(dim=1024, num_heads=16, num_layers=24),
             "t5": dict(d_model=768, num_layers=12, num_heads=12, d_ff=3072, d_kv=64),
             "encodec": dict(num_filters=64, codebook_size=2048, kmeans_iters=2)},
    # assumption: audiocraft's model_scale=medium (the 1B release config is not available offline)
    "1b": {"org": "jasco-random-1b", "arch": dict(dim=1536, num_heads=24, num_layers=48),
           "t5": dict(d_model=768, num_layers=12, num_heads=12, d_ff=3072, d_kv=64),
           "encodec": dict(num_filters=64, codebook_size=2048, kmeans_iters=2)},
}

_ROOTS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_QUALITIES = ["", "m", "7", "maj7", "m7", "6", "m6", "dim", "aug", "m7b5", "sus2", "sus4", "9", "m9", "add9", "7sus4"]


def tiny_chords_mapping() -> tp.Dict[str, int]:
    """A 194-label mapping with the release layout ('N' = 0, 'UNK' = 193; null chord = 194)."""
    labels = [r + q for q in _QUALITIES for r in _ROOTS][:192]
    mapping = {"N": 0}
    mapping.update({lab: i + 1 for i, lab in enumerate(labels)})
    mapping["UNK"] = len(mapping)
    return mapping


def tiny_xp_cfg(melody: bool, dim: int = 64, num_heads: int = 4, num_layers: int = 2,
                skip_connections: bool = False, org: str = "jasco-tiny") -> str:
    """An xp.cfg YAML with every key audiocraft's JASCO builder reads, release-style interpolations,
    and the ``???`` / ``${oc.env:USER}`` values a release carries in sections inference never reads."""
    cfg: tp.Dict[str, tp.Any] = {
        "device": "cuda", "dtype": "float32", "autocast": True, "autocast_dtype": "float16", "seed": 2036,
        "efficient_attention_backend": "xformers",
        "dora": {"dir": "/checkpoint/${oc.env:USER}/experiments/audiocraft/outputs"},
        "datasource": {"train": "???", "valid": "???", "evaluate": "???", "generate": "???"},
        "sample_rate": 32000, "channels": 1,
        "dataset": {"segment_duration": 10, "batch_size": 8},
        "compression_model_checkpoint": f"//pretrained/{org}/encodec_32khz",
        "compression_model_latent_std": 4.0102, "compression_model_latent_mean": -0.0074,
        "compression_model_framerate": 50, "compression_model_latent_dim": 128,
        "generate": {"lm": {"cfg_coef_all": 3.0 if melody else 5.0, "cfg_coef_txt": 1.0 if melody else 0.0}},
        "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
        "attribute_dropout": {"text": {}, "symbolic": {"chords": 0.3, **({"melody": 0.5} if melody else {})},
                              "wav": {"self_wav": 0.3}},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1, "sum": [], "prepend": [],
                  "cross": ["description"], "ignore": ["chords", "self_wav"] + (["melody"] if melody else []),
                  "input_interpolate": []},
        "conditioners": {
            "self_wav": {"model": "drum_latents", "drum_latents": {
                "sample_rate": "${sample_rate}", "out_dim": 2, "blurring_factor": 3, "cache_path": None,
                "compression_model_latent_dim": "${compression_model_latent_dim}",
                "compression_model_framerate": "${compression_model_framerate}",
                "segment_duration": "${dataset.segment_duration}"}},
            "description": {"model": "t5", "t5": {"name": f"{org}/t5", "finetune": False, "word_dropout": 0.3,
                                                  "normalize_text": False}},
            "chords": {"model": "chords_emb", "chords_emb": {"card": 194, "out_dim": 16}},
        },
        "transformer_lm": {
            "dim": dim, "num_heads": num_heads, "num_layers": num_layers, "hidden_scale": 4, "n_q": 4, "card": 2048,
            "dropout": 0.0, "activation": "gelu", "norm_first": True, "bias_ff": False, "bias_attn": False,
            "bias_proj": False, "past_context": None, "causal": False, "custom": False, "memory_efficient": True,
            "attention_as_float32": False, "layer_scale": None, "positional_embedding": "sin", "xpos": False,
            "checkpointing": "none", "weight_init": "gaussian", "depthwise_init": "current", "zero_bias_init": True,
            "norm": "layer_norm", "cross_attention": False, "qk_layer_norm": False, "qk_layer_norm_cross": False,
            "attention_dropout": None, "kv_repeat": 1, "skip_connections": skip_connections,
            "flow_dim": "${compression_model_latent_dim}",
            "chords_dim": "${conditioners.chords.chords_emb.out_dim}",
            "drums_dim": "${conditioners.self_wav.drum_latents.out_dim}",
        },
    }
    if melody:
        cfg["conditioners"]["melody"] = {"model": "melody", "melody": {"card": 53, "out_dim": 16}}
        cfg["transformer_lm"]["melody_dim"] = "${conditioners.melody.melody.out_dim}"
    return yaml.safe_dump(cfg, sort_keys=False)


@torch.no_grad()
def randomize_(module: torch.nn.Module, generator: torch.Generator, skip_prefix: str = "") -> None:
    """Give every parameter random, non-trivial values (LayerNorm gains ≈ 1, small weights)."""
    for name, p in module.named_parameters():
        if skip_prefix and name.startswith(skip_prefix):
            continue
        if p.dim() == 1 and ("norm" in name):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=generator) if name.endswith("weight")
                    else 0.1 * torch.randn(p.shape, generator=generator))
        elif p.dim() == 1:
            p.copy_(0.1 * torch.randn(p.shape, generator=generator))
        else:
            fan_in = p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=generator) / fan_in ** 0.5)


def write_tiny_jasco(folder: Path, melody: bool, t5_dim: int, encodec: torch.nn.Module, seed: int = 0,
                     org: str = "jasco-tiny", **arch: tp.Any) -> Path:
    """Write ``state_dict.bin``, ``compression_state_dict.bin`` and the chords mapping into ``folder``."""
    yaml_text = tiny_xp_cfg(melody, org=org, **arch)
    cfg = parse_xp_cfg(yaml_text)
    # built on the meta device and materialised uninitialised: randomize_ writes every parameter (the
    # model has no buffers), so a default init would only cost time and a second copy of the weights
    with torch.device("meta"):
        model = build_flow_model(cfg, t5_dim=t5_dim)
    assert not list(model.buffers()), "to_empty would leave buffers uninitialised"
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    randomize_(model, gen)  # same draws as with the EnCodec attached: its parameters were skipped
    if "self_wav" in model.condition_provider.conditioners:  # as build_flow_model attaches it
        model.condition_provider.conditioners["self_wav"].compression_model = CompressionModel(encodec)
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(model.state_dict())  # every tensor owns its storage: saved as is, without a copy
    assert all(v.is_contiguous() and v.untyped_storage().nbytes() == v.numel() * v.element_size()
               for v in state.values())
    torch.save({"best_state": state, "xp.cfg": yaml_text, "version": "1.4.0a2", "exported": True},
               folder / "state_dict.bin")
    torch.save({"pretrained": f"{org}/encodec_32khz"}, folder / "compression_state_dict.bin")
    with open(folder / "chord_to_index_mapping.pkl", "wb") as f:
        pickle.dump(tiny_chords_mapping(), f)
    return folder


def make_tiny_models(out: tp.Union[str, Path], seed: int = 0, force: bool = False, preset: str = "tiny",
                     variants: tp.Sequence[str] = tuple(VARIANTS), separator: tp.Optional[bool] = None) -> Path:
    """Write T5, EnCodec and JASCO variants of ``preset`` into a hub cache at ``out/hub``; return it.

    Repo ids: ``{org}/t5``, ``{org}/encodec_32khz``, ``{org}/{variant}`` with org ``PRESETS[preset]['org']``, and
    ``{org}/HTDemucs`` (a random htdemucs, tiny/htdemucs.py) when ``separator`` (default: tiny preset, demucs installed).
    An existing cache already holding the preset's repos is reused unless ``force``.
    """
    from transformers import EncodecModel, T5Config

    from .assets import make_tiny_encodec, make_tiny_t5, write_hub_repo

    from .assets import hub_repo_folder

    p = PRESETS[preset]
    org = p["org"]
    out = Path(out)
    hub = out / "hub"
    import importlib.util

    # a random htdemucs in demucs' own format ({org}/HTDemucs, hf://{org}/htdemucs): by default for the tiny preset
    separator = (preset == "tiny" if separator is None else separator) and importlib.util.find_spec("demucs") is not None
    wanted = [f"{org}/t5", f"{org}/encodec_32khz"] + [f"{org}/{v}" for v in variants] + \
        ([f"{org}/HTDemucs"] if separator else [])
    if hub.exists():
        if not force and all(hub_repo_folder(hub, r).exists() for r in wanted):
            return hub
        for r in wanted:
            shutil.rmtree(hub_repo_folder(hub, r), ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="jasco-tiny-") as tmp:
        tmp_p = Path(tmp)
        t5_dir, enc_dir = tmp_p / "t5", tmp_p / "encodec"
        logger.info("building %s T5 and EnCodec", preset)
        make_tiny_t5(t5_dir, seed=seed, **p["t5"])
        make_tiny_encodec(enc_dir, seed=seed, **p["encodec"])
        stage = tmp_p / "hub"
        write_hub_repo(stage, f"{org}/t5", t5_dir)
        write_hub_repo(stage, f"{org}/encodec_32khz", enc_dir)
        t5_dim = T5Config.from_pretrained(t5_dir).d_model
        encodec = EncodecModel.from_pretrained(enc_dir).eval()
        for i, variant in enumerate(variants):
            logger.info("writing %s/%s", org, variant)
            folder = write_tiny_jasco(tmp_p / variant, VARIANTS[variant], t5_dim, encodec, seed=seed + 1 + i,
                                      org=org, **p["arch"])
            write_hub_repo(stage, f"{org}/{variant}", folder)
            shutil.rmtree(folder)
        if separator:
            from .htdemucs import write_htdemucs_repo

            write_htdemucs_repo(stage, org=org, preset="tiny" if preset == "tiny" else "htdemucs", seed=seed)
        hub.mkdir(parents=True, exist_ok=True)
        for repo in stage.iterdir():
            shutil.move(str(repo), str(hub / repo.name))
    logger.info("tiny models written to %s", hub)
    return hub
