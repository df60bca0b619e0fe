"""What an export writes besides its graphs: the manifest records, the condition tables, the tokenizer and
the tool versions.  The records' schema is :mod:`jasco_runtime.export_folder`'s; this module fills them from a
loaded model (audiocraft ``models/jasco.py`` / ``modules/conditioners.py`` for the conditioner fields)."""
from __future__ import annotations

import platform
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from jasco_runtime.export_folder import (AudioRecord, DefaultsRecord, DimsRecord, ExportRecord, LatentsRecord, Manifest,
                                         ModelRecord)

from .errors import JascoError
from .graphs.spec import GraphSpec

if tp.TYPE_CHECKING:  # pragma: no cover
    from .exporter import ExportOptions
    from .reference.jasco import JASCO

VERSIONED = ("torch", "transformers", "onnx", "onnxruntime", "onnxconverter-common", "tensorrt", "polygraphy", "jasco-trt")


def tables(jasco: "JASCO") -> tp.Dict[str, np.ndarray]:
    """Torch-free condition tables: chords embedding, melody projection, null and silence drums."""
    conds = jasco.model.condition_provider.conditioners
    out: tp.Dict[str, np.ndarray] = {}
    with torch.no_grad():
        if "chords" in conds:
            out["chords_emb"] = conds["chords"].emb.weight.float().numpy()
        if "melody" in conds:
            out["melody_weight"] = conds["melody"].output_proj.weight.float().numpy()
            out["melody_bias"] = conds["melody"].output_proj.bias.float().numpy()
        if "self_wav" in conds:
            d = conds["self_wav"]
            out["drums_null"] = d.output_proj.bias.float().numpy()
            silence = torch.zeros(1, 1, int(jasco.duration * jasco.sample_rate))
            if getattr(jasco, "separator", None) is not None:  # audiocraft separates the zero-padded null rows too
                from .reference.separation import separate_drums

                silence = separate_drums(silence, jasco.sample_rate, jasco.sample_rate, model=jasco.separator)
            out["drums_silence"] = d(silence)[0][0].float().numpy()
    return out


def save_tokenizer(tokenizer: tp.Any, path: Path) -> None:
    """Write the fast tokenizer's ``tokenizer.json`` for the runtime's ``tokenizers`` library."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise JascoError("the T5 tokenizer has no fast (tokenizers) backend; cannot write tokenizer.json")
    backend.save(str(path))


def versions() -> tp.Dict[str, str]:
    """Python and the installed versions of the tools that shape the artifacts."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def conditioner_records(jasco: "JASCO") -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """``conditioners``: what the runtime needs to build each condition and its null (BEHAVIOUR.md)."""
    cfg = jasco.cfg
    conds = jasco.model.condition_provider.conditioners
    out: tp.Dict[str, tp.Any] = {"text": {"t5": conds["description"].name, "dim": cfg.transformer.dim,
                                          "null": "description '' → </s> with attention mask 0 → embedding 0"}}
    if "chords" in conds:
        out["chords"] = {"card": conds["chords"].card, "null_index": conds["chords"].null_chord,
                         "dim": cfg.transformer.chords_dim, "table": "chords_emb",
                         "null": "null chord index (card) on every frame"}
    if "self_wav" in conds:
        out["drums"] = {"dim": cfg.transformer.drums_dim, "blurring_factor": conds["self_wav"].blurring_factor,
                        "null": "drums_null (projection bias) when no CFG row keeps drums; drums_silence "
                                "(EnCodec of a zero wav) for dropped rows when another row keeps them"}
    if "melody" in conds:
        out["melody"] = {"bins": conds["melody"].card, "dim": cfg.transformer.melody_dim,
                         "table": "melody_weight/melody_bias",
                         "null": "zeros salience → projection bias; kept in Text/Null terms when chords are absent"}
    return out


def build_manifest(jasco: "JASCO", graphs: tp.Dict[str, GraphSpec], opts: "ExportOptions",
                   runtime_graphs: tp.Sequence[str]) -> Manifest:
    """The records of a new export folder: model, audio, conditioners, defaults, graph declarations (artifacts
    are added as they are written).  ``runtime_graphs``: every graph the model declares with role ``runtime``
    (also those ``--graphs`` leaves out), so the runtime knows what a complete folder has."""
    cfg = jasco.cfg
    mf = jasco.files
    return Manifest(
        model=ModelRecord(id=opts.model, variant=cfg.variant, revision=mf.revision if mf else None,
                          sha256=mf.sha256() if mf else {}, t5=opts.t5 or cfg.t5_name),
        audio=AudioRecord(sample_rate=cfg.sample_rate, channels=cfg.channels, frame_rate=jasco.frame_rate,
                          duration=jasco.duration, n_frames=jasco.n_frames,
                          segment_samples=int(jasco.duration * cfg.sample_rate),
                          max_duration=max(float(opts.max_duration), float(jasco.duration))),
        latents=LatentsRecord(dim=cfg.latent_dim, mean=cfg.latent_mean, std=cfg.latent_std,
                              decoder_folds_unnormalisation=True),
        dims=DimsRecord(transformer=cfg.transformer.dim, heads=cfg.transformer.num_heads,
                        layers=cfg.transformer.num_layers, flow=cfg.transformer.flow_dim),
        conditioners=conditioner_records(jasco),
        generation_defaults=DefaultsRecord(
            cfg_coef_all=5.0, cfg_coef_txt=0.0, solver="euler", steps=10, rtol=1e-5, atol=1e-5,
            note="CFG defaults are audiocraft's set_generation_params defaults (5.0, 0.0); "
                 "the demo app uses euler 10 steps with all 1.25, txt 2.5"),
        graphs={name: g.to_manifest() for name, g in graphs.items()},
        files={},
        export=ExportRecord(precisions=tuple(opts.precisions), backend=opts.target, max_batch=opts.max_batch,
                            max_text_tokens=opts.max_text_tokens, opset=opts.opset,
                            runtime_graphs=tuple(runtime_graphs)),
        tools=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        extra={"cfg": {"terms": "All=cfg_coef_all, Text=cfg_coef_txt, Null=1-All-Text; |w|<1e-6 removed with "
                                "audiocraft's list.remove-while-iterating quirk; rows are term-major"}},
    )
