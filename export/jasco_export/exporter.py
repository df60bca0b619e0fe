"""``jasco-export``: checkpoint → ONNX graphs (fp32, mixed fp16) → TensorRT engines → parity report.

Everything is written to a temporary sibling folder and renamed into place at the end, so a failure
never leaves a half-written output folder.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from jasco_runtime.chords import save_chord_mapping_json
from jasco_runtime.manifest import MANIFEST, SCHEMA_VERSION

from .graphs import onnx_export
from .errors import InputError, JascoError
from .graphs.spec import GraphSpec, declare_graphs
from .reference.jasco import JASCO

logger = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")  # int8: CPU flow step (ONNX Runtime dynamic quantisation)


@dataclass
class ExportOptions:
    model: str
    out: tp.Optional[Path] = None
    precisions: tp.Tuple[str, ...] = ("fp32", "fp16")
    backend: str = "onnx"  # onnx | trt | all
    max_batch: int = 6
    max_text_tokens: int = 128
    opset: int = 17
    t5: tp.Optional[str] = None
    chords_mapping: tp.Optional[str] = None
    revision: tp.Optional[str] = None
    parity_gate: bool = True
    run_parity: bool = True  # library only (benchmark caches): False skips the parity runs altogether
    force: bool = False
    graphs: tp.Optional[tp.Sequence[str]] = None
    end_to_end: bool = True


@dataclass
class ExportResult:
    out: Path
    manifest: tp.Dict[str, tp.Any]
    parity: tp.Dict[str, tp.Any]
    timings: tp.Dict[str, float] = field(default_factory=dict)


def default_out(model: str) -> Path:
    return Path("engines") / Path(model.rstrip("/")).name


def _prepare_out(opts: ExportOptions) -> Path:
    out = Path(opts.out) if opts.out is not None else default_out(opts.model)
    if out.exists() and not opts.force:
        raise InputError(f"output folder {out} already exists; pass --force to replace it")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".jasco-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise InputError(f"cannot write to {parent} ({exc.strerror or exc}); choose another --out") from exc
    return out


def _log(msg: str) -> None:
    print(f"[jasco-export] {msg}", flush=True)


def tables(jasco: JASCO) -> tp.Dict[str, np.ndarray]:
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
            out["drums_silence"] = d(silence)[0][0].float().numpy()
    return out


def save_tokenizer(tokenizer: tp.Any, path: Path) -> None:
    """Write the fast tokenizer's ``tokenizer.json`` for the runtime's ``tokenizers`` library."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise JascoError("the T5 tokenizer has no fast (tokenizers) backend; cannot write tokenizer.json")
    backend.save(str(path))


def _versions() -> tp.Dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxconverter-common", "tensorrt", "polygraphy", "jasco-trt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def build_manifest(jasco: JASCO, graphs: tp.Dict[str, GraphSpec], files: tp.Dict[str, tp.Dict[str, str]],
                   extra_files: tp.Dict[str, str], opts: ExportOptions, fp16_info: tp.Dict[str, tp.Any],
                   trt_info: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    cfg = jasco.cfg
    conds = jasco.model.condition_provider.conditioners
    mf = jasco.files
    conditioners: tp.Dict[str, tp.Any] = {"text": {"t5": conds["description"].name, "dim": cfg.transformer.dim,
                                                   "null": "description '' → </s> with attention mask 0 → embedding 0"}}
    if "chords" in conds:
        conditioners["chords"] = {"card": conds["chords"].card, "null_index": conds["chords"].null_chord,
                                  "dim": cfg.transformer.chords_dim, "table": "chords_emb",
                                  "null": "null chord index (card) on every frame"}
    if "self_wav" in conds:
        conditioners["drums"] = {"dim": cfg.transformer.drums_dim, "blurring_factor": conds["self_wav"].blurring_factor,
                                 "null": "drums_null (projection bias) when no CFG row keeps drums; drums_silence "
                                         "(EnCodec of a zero wav) for dropped rows when another row keeps them"}
    if "melody" in conds:
        conditioners["melody"] = {"bins": conds["melody"].card, "dim": cfg.transformer.melody_dim,
                                  "table": "melody_weight/melody_bias",
                                  "null": "zeros salience → projection bias; kept in Text/Null terms when chords are absent"}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"id": opts.model, "revision": mf.revision if mf else None,
                  "sha256": mf.sha256() if mf else {}, "variant": cfg.variant,
                  "t5": opts.t5 or cfg.t5_name},
        "audio": {"sample_rate": cfg.sample_rate, "channels": cfg.channels, "frame_rate": jasco.frame_rate,
                  "duration": jasco.duration, "n_frames": jasco.n_frames,
                  "segment_samples": int(jasco.duration * cfg.sample_rate)},
        "latents": {"dim": cfg.latent_dim, "mean": cfg.latent_mean, "std": cfg.latent_std,
                    "decoder_folds_unnormalisation": True},
        "dims": {"transformer": cfg.transformer.dim, "heads": cfg.transformer.num_heads,
                 "layers": cfg.transformer.num_layers, "flow": cfg.transformer.flow_dim},
        "conditioners": conditioners,
        "generation_defaults": {"cfg_coef_all": 5.0, "cfg_coef_txt": 0.0, "solver": "euler", "steps": 10,
                                "rtol": 1e-5, "atol": 1e-5,
                                "note": "CFG defaults are audiocraft's set_generation_params defaults (5.0, 0.0); "
                                        "the demo app uses euler 10 steps with all 1.25, txt 2.5"},
        "cfg": {"terms": "All=cfg_coef_all, Text=cfg_coef_txt, Null=1-All-Text; |w|<1e-6 removed with "
                         "audiocraft's list.remove-while-iterating quirk; rows are term-major"},
        "graphs": {name: {**g.to_manifest(), "files": files.get(name, {})} for name, g in graphs.items()},
        "precision": {"onnx": list(opts.precisions), "fp16": fp16_info},
        "tensorrt": trt_info,
        "files": extra_files,
        "tools": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_export(opts: ExportOptions) -> ExportResult:
    """The whole export; returns the manifest and parity report (raises JascoError on failure)."""
    for p in opts.precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {p!r}; use any of {', '.join(PRECISIONS)}")
    if "fp32" not in opts.precisions:
        raise InputError("--precision must include fp32 (the reference graphs the others derive from and fall back to)")
    if opts.backend not in ("onnx", "trt", "all"):
        raise InputError(f"unknown backend {opts.backend!r}; use onnx, trt or all")
    out = _prepare_out(opts)
    timings: tp.Dict[str, float] = {}
    t0 = time.perf_counter()
    _log(f"loading {opts.model}")
    jasco = JASCO.get_pretrained(opts.model, device="cpu", chords_mapping_path=opts.chords_mapping, t5=opts.t5,
                                 revision=opts.revision)
    timings["load"] = time.perf_counter() - t0
    graphs = declare_graphs(jasco, max_batch=opts.max_batch, max_text_tokens=opts.max_text_tokens)
    if opts.graphs:
        unknown = set(opts.graphs) - set(graphs)
        if unknown:
            raise InputError(f"unknown graph(s) {sorted(unknown)}; choose from {sorted(graphs)}")
        graphs = {k: v for k, v in graphs.items() if k in opts.graphs}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        files: tp.Dict[str, tp.Dict[str, str]] = {}
        fp16_info: tp.Dict[str, tp.Any] = {}
        int8_info: tp.Dict[str, tp.Any] = {}
        for name, spec in graphs.items():
            t = time.perf_counter()
            _log(f"exporting {name} (fp32 ONNX, opset {opts.opset})")
            path = onnx_export.export_graph(spec, tmp / f"{name}.fp32.onnx", opts.opset)
            files[name] = {"onnx-fp32": path.name}
            if "fp16" in opts.precisions and not spec.fp16:
                fp16_info[name] = {"kept_fp32": True, "reason": spec.description}
            elif "fp16" in opts.precisions:
                _log(f"converting {name} to mixed fp16")
                info = onnx_export.convert_fp16(path, tmp / f"{name}.fp16.onnx")
                files[name]["onnx-fp16"] = f"{name}.fp16.onnx"
                fp16_info[name] = info
            if "int8" in opts.precisions and name == "flow_step":
                _log("quantising flow_step to int8 (attention fused, dynamic int8 linears) for ONNX Runtime CPU")
                files[name]["onnx-int8"], int8_info = _int8_flow_step(tmp, path, jasco.cfg.transformer.num_heads)
            timings[f"export_{name}"] = time.perf_counter() - t
        np.savez(tmp / "tables.npz", **tables(jasco))
        save_tokenizer(jasco.model.condition_provider.conditioners["description"].tokenizer, tmp / "tokenizer.json")
        extra = {"tables": "tables.npz", "tokenizer": "tokenizer.json"}
        if jasco.chords_mapping:
            save_chord_mapping_json(jasco.chords_mapping, tmp / "chords_mapping.json")
            extra["chords_mapping"] = "chords_mapping.json"
        trt_info = build_tensorrt(tmp, graphs, files, opts)
        manifest = build_manifest(jasco, graphs, files, extra, opts, fp16_info, trt_info)
        if int8_info:
            manifest["precision"]["int8"] = {"flow_step": int8_info}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        from .parity.gate import run_parity

        t = time.perf_counter()
        parity = run_parity(jasco, graphs, tmp, opts, log=_log) if opts.run_parity else \
            {"passed": None, "rows": [], "skipped": "parity not run (ExportOptions.run_parity=False)"}
        timings["parity"] = time.perf_counter() - t
        extra["parity"] = "parity.json"
        manifest["files"] = extra
        (tmp / "parity.json").write_text(json.dumps(parity, indent=2))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if parity["passed"] is False and opts.parity_gate:
            failed = ", ".join(r["check"] for r in parity["rows"] if r["status"] == "FAIL")
            raise JascoError(f"parity gate failed ({failed}); see the table above, or pass --no-parity-gate to keep the artifacts")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact folder gets normal permissions
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportResult(out, manifest, parity, timings)


def _int8_flow_step(folder: Path, fp32_path: Path, num_heads: int) -> tp.Tuple[str, tp.Dict[str, tp.Any]]:
    """Fused-attention copy of the fp32 flow step, then its int8 dynamic quantisation (see quantize.py)."""
    from .graphs.fusion import fuse_attention
    from .graphs.quantize import fp32_nodes, quantize_flow_step_int8

    fused = folder / ".flow_step.fp32-fused.onnx"
    try:
        fusion = fuse_attention(fp32_path, fused, num_heads)
        dst = folder / "flow_step.int8.onnx"
        recipe = quantize_flow_step_int8(fused, dst, exclude=fp32_nodes(fused))
    finally:
        for f in folder.glob(fused.name + "*"):
            f.unlink()
    return dst.name, {**recipe, "attention_fusion": fusion}


def summary_table(res: ExportResult) -> str:
    """Markdown table of what was written: per graph its files and sizes, export time, TRT check."""
    def size(name: tp.Optional[str]) -> str:
        if not name:
            return "-"
        return f"{onnx_export.file_size(res.out / name) / 2**20:.1f} MiB"

    compat = res.manifest.get("tensorrt", {}).get("compatibility", {})
    lines = ["| graph | onnx fp32 | onnx fp16 | onnx int8 | TensorRT fp16 | export s | TensorRT op check |",
             "|---|---|---|---|---|---|---|"]
    for name, g in res.manifest["graphs"].items():
        f = g.get("files", {})
        check = compat.get(name, {})
        lines.append(f"| {name} | {size(f.get('onnx-fp32'))} | {size(f.get('onnx-fp16'))} | {size(f.get('onnx-int8'))} | {size(f.get('trt-fp16'))} | "
                     f"{res.timings.get('export_' + name, 0):.1f} | {'ok' if check.get('ok') else 'PROBLEMS' if check else '-'} |")
    return "\n".join(lines)


def build_tensorrt(folder: Path, graphs: tp.Dict[str, GraphSpec], files: tp.Dict[str, tp.Dict[str, str]],
                   opts: ExportOptions) -> tp.Dict[str, tp.Any]:
    """Compatibility check always; engines when TensorRT and a GPU are present (or asked for)."""
    info: tp.Dict[str, tp.Any] = {"compatibility": {}, "engines": {}}
    try:
        from .tensorrt.build import TensorRTUnavailable, build_engine, check_trt_compatibility, device_info
    except ImportError as exc:  # pragma: no cover - module is part of the package
        info["skipped"] = f"tensorrt_build unavailable: {exc}"
        return info
    for name, spec in graphs.items():
        src = files[name].get("onnx-fp16") or files[name]["onnx-fp32"]
        profiles = {s.name: [tuple(int(getattr(spec.axes[d], k)) if isinstance(d, str) else d for d in s.shape)
                             for k in ("min", "opt", "max")] for s in spec.inputs}
        report = check_trt_compatibility(folder / src, profiles=profiles, runtime_shapes=spec.runtime_shapes())
        info["compatibility"][name] = report.to_dict()
    if opts.backend == "onnx":
        info["skipped"] = "not requested (--backend onnx)"
        return info
    try:
        info["device"] = device_info()
        cache = folder / "timing.cache"
        for name, spec in graphs.items():
            if name == "encodec_encoder":
                continue
            src = folder / files[name].get("onnx-fp16", files[name]["onnx-fp32"])
            profiles = {s.name: tuple(tuple(int(getattr(spec.axes[d], k)) if isinstance(d, str) else d for d in s.shape)
                                      for k in ("min", "opt", "max")) for s in spec.inputs}
            _log(f"building TensorRT engine for {name}")
            engine = folder / f"{name}.fp16.plan"
            build_engine(src, engine, profiles, cache)
            files[name]["trt-fp16"] = engine.name
            info["engines"][name] = engine.name
    except TensorRTUnavailable as exc:
        if opts.backend == "trt":
            raise JascoError(f"TensorRT engines were requested but cannot be built here: {exc}") from exc
        _log(f"TensorRT skipped: {exc}")
        info["skipped"] = str(exc)
    return info
