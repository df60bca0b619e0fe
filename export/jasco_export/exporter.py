"""``jasco-export``: checkpoint → ONNX graphs (fp32, mixed fp16) → TensorRT engines → parity report.

Everything is written to a temporary sibling folder and renamed into place at the end, so a failure
never leaves a half-written output folder.
"""
from __future__ import annotations

import gc
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
from jasco_runtime.export_folder import ArtifactKey, ExportFolder
from jasco_runtime.verify import failures, format_table, verify_folder

from .graphs import onnx_export
from jasco_runtime.signals import sigterm_interrupts

from .errors import InputError, JascoError
from .graphs.separator import separator_record
from .graphs.spec import GraphSpec, declare_graphs
from .separator import resolve_separator
from .reference.jasco import JASCO

logger = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")  # int8: CPU flow step (ONNX Runtime dynamic quantisation)
# torch.onnx exports opsets 14+ (LayerNormalization needs 17 for one node); ONNX Runtime 1.17 reads up to 20
MIN_OPSET, MAX_OPSET = 17, 20


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
    separator: tp.Optional[str] = "auto"  # auto | htdemucs | hf://org/htdemucs | PATH.safetensors | none (separator.py)


@dataclass
class ExportResult:
    out: Path
    folder: ExportFolder
    parity: tp.Dict[str, tp.Any]
    timings: tp.Dict[str, float] = field(default_factory=dict)

    @property
    def manifest(self) -> tp.Dict[str, tp.Any]:
        return self.folder.raw


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
            if jasco.separator is not None:  # audiocraft separates the zero-padded null rows too
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


def _versions() -> tp.Dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxconverter-common", "tensorrt", "polygraphy", "jasco-trt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def build_manifest(jasco: JASCO, graphs: tp.Dict[str, GraphSpec], opts: ExportOptions) -> tp.Dict[str, tp.Any]:
    """The manifest of a new export folder: model, audio, conditioners, defaults, graph declarations
    (artifacts are added as they are written)."""
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
        "graphs": {name: g.to_manifest() for name, g in graphs.items()},
        "files": {},
        "export": {"precisions": list(opts.precisions), "backend": opts.backend, "max_batch": opts.max_batch,
                   "max_text_tokens": opts.max_text_tokens, "opset": opts.opset},
        "tools": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def check_options(opts: ExportOptions) -> None:
    """Every option checked before any heavy work (loading a checkpoint takes minutes at 1B)."""
    for p in opts.precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {p!r}; use any of {', '.join(PRECISIONS)}")
    if "fp32" not in opts.precisions:
        raise InputError("--precision must include fp32 (the reference graphs the others derive from and fall back to)")
    if opts.backend not in ("onnx", "trt", "all"):
        raise InputError(f"unknown backend {opts.backend!r}; use onnx, trt or all")
    if opts.backend in ("trt", "all") and "fp16" not in opts.precisions:
        raise InputError("--backend trt builds FP16 engines from the mixed-fp16 ONNX graphs; add fp16 to --precision")
    if not 1 <= opts.max_batch <= 256:
        raise InputError(f"--max-batch must be between 1 and 256 CFG rows, got {opts.max_batch}")
    if not 1 <= opts.max_text_tokens <= 4096:
        raise InputError(f"--max-text-tokens must be between 1 and 4096, got {opts.max_text_tokens}")
    if not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise InputError(f"--opset {opts.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default 17)")


def select_graphs(graphs: tp.Dict[str, GraphSpec], names: tp.Optional[tp.Sequence[str]]) -> tp.Dict[str, GraphSpec]:
    """The graphs to export: every ``runtime`` graph by default; ``--graphs`` picks any, ``extra`` ones included."""
    if not names:
        return {k: v for k, v in graphs.items() if v.role == "runtime"}
    unknown = set(names) - set(graphs)
    if unknown:
        raise InputError(f"unknown graph(s) {sorted(unknown)}; choose from {sorted(graphs)}")
    return {k: v for k, v in graphs.items() if k in names}


def run_export(opts: ExportOptions) -> ExportResult:
    """The whole export; returns the folder and the parity report (raises JascoError on failure).
    SIGTERM cleans up like Ctrl-C: nothing is left at ``--out`` or beside it."""
    with sigterm_interrupts():
        return _run_export(opts)


def _run_export(opts: ExportOptions) -> ExportResult:
    check_options(opts)
    out = _prepare_out(opts)
    timings: tp.Dict[str, float] = {}
    t0 = time.perf_counter()
    _log(f"loading {opts.model}")
    jasco = JASCO.get_pretrained(opts.model, device="cpu", chords_mapping_path=opts.chords_mapping, t5=opts.t5,
                                 revision=opts.revision)
    timings["load"] = time.perf_counter() - t0
    separator = resolve_separator(opts.separator, "self_wav" in jasco.model.condition_provider.conditioners, _log)
    jasco.separator = separator.bag if separator else None  # declare_graphs adds drums_separator
    graphs = select_graphs(declare_graphs(jasco, max_batch=opts.max_batch, max_text_tokens=opts.max_text_tokens),
                           opts.graphs)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        np.savez(tmp / "tables.npz", **tables(jasco))
        save_tokenizer(jasco.model.condition_provider.conditioners["description"].tokenizer, tmp / "tokenizer.json")
        manifest = build_manifest(jasco, graphs, opts)
        if separator is not None:
            manifest["conditioners"]["drums"]["separator"] = separator_record(separator.model, separator.name, 1)
        folder = ExportFolder.create(tmp, manifest)
        folder.add_file("tables", "tables.npz", save=False)
        folder.add_file("tokenizer", "tokenizer.json", save=False)
        if jasco.chords_mapping:
            save_chord_mapping_json(jasco.chords_mapping, tmp / "chords_mapping.json")
            folder.add_file("chords_mapping", "chords_mapping.json", save=False)
        spec = None  # the loop variable holds a graph module (and with it the memory-mapped checkpoint)
        for name, spec in graphs.items():
            t = time.perf_counter()
            export_artifacts(folder, spec, opts, jasco.cfg.transformer.num_heads)
            timings[f"export_{name}"] = time.perf_counter() - t
        folder.save()
        build_tensorrt(folder, graphs, opts)
        t = time.perf_counter()
        if opts.run_parity:
            from .parity.golden import write_golden_set

            folder.set_record("golden", write_golden_set(jasco, graphs, folder.golden_dir, opts.end_to_end, log=_log))
        del jasco, graphs, spec  # every later step runs ONNX Runtime / TensorRT only: free the PyTorch model first
        gc.collect()
        parity = _parity(folder, opts)
        timings["parity"] = time.perf_counter() - t
        if parity["passed"] is not True and opts.parity_gate and opts.run_parity:
            raise JascoError(f"parity gate failed ({failures(parity)}); nothing was written — see the table above, "
                             "or pass --no-parity-gate to keep the artifacts")
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
    return ExportResult(out, folder.moved_to(out), parity, timings)


def export_artifacts(folder: ExportFolder, spec: GraphSpec, opts: ExportOptions, num_heads: int) -> None:
    """fp32 ONNX, then each requested precision the graph declares (mixed fp16, int8)."""
    name, tmp = spec.name, folder.folder
    _log(f"exporting {name} (fp32 ONNX, opset {opts.opset})")
    fp32 = ArtifactKey(name, "fp32", "onnx")
    path = onnx_export.export_graph(spec, tmp / fp32.default_file, opts.opset)
    folder.add_artifact(fp32, path.name, save=False)
    if "fp16" in opts.precisions and spec.fp16:
        _log(f"converting {name} to mixed fp16")
        key = ArtifactKey(name, "fp16", "onnx")
        info = onnx_export.convert_fp16(path, tmp / key.default_file)
        folder.add_artifact(key, save=False, **info)
    if "int8" in opts.precisions and "int8" in spec.precisions:
        _log(f"quantising {name} to int8 (attention fused, dynamic int8 linears) for ONNX Runtime CPU")
        key = ArtifactKey(name, "int8", "onnx")
        info = _int8_flow_step(path, tmp / key.default_file, num_heads)
        folder.add_artifact(key, save=False, **info)


def _parity(folder: ExportFolder, opts: ExportOptions) -> tp.Dict[str, tp.Any]:
    """Every artifact of the folder against the golden set just written (see :mod:`jasco_runtime.verify`)."""
    from .parity.gate import cuda_providers, save_report

    if not opts.run_parity:
        return {"passed": None, "rows": [], "skipped": "parity not run (ExportOptions.run_parity=False)"}
    report = verify_folder(folder, providers=cuda_providers(), end_to_end=opts.end_to_end, log=_log)
    report["source"] = "jasco-export (golden set written by the PyTorch reference in this run)"
    _log("\n" + format_table(report["rows"]))
    save_report(folder, report, "parity")
    return report


def _int8_flow_step(fp32_path: Path, dst: Path, num_heads: int) -> tp.Dict[str, tp.Any]:
    """Fused-attention copy of the fp32 flow step, then its int8 dynamic quantisation (see graphs/quantize.py)."""
    from .graphs.fusion import fuse_attention
    from .graphs.quantize import fp32_nodes, quantize_flow_step_int8

    fused = dst.parent / f".{fp32_path.stem}-fused.onnx"
    try:
        fusion = fuse_attention(fp32_path, fused, num_heads)
        recipe = quantize_flow_step_int8(fused, dst, exclude=fp32_nodes(fused))
    finally:
        for f in dst.parent.glob(fused.name + "*"):
            f.unlink()
    return {**recipe, "attention_fusion": fusion}


def summary_table(res: ExportResult) -> str:
    """Markdown table of what was written: per graph its artifacts and sizes, export time, TRT op check."""
    folder = res.folder
    compat = folder.raw.get("tensorrt", {}).get("compatibility", {})
    columns = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("tensorrt", "fp16"), ("tensorrt", "fp32")]
    lines = ["| graph | role | " + " | ".join(f"{b} {p}" for b, p in columns) + " | export s | TensorRT op check |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for name, g in folder.graphs.items():
        cells = []
        for backend, precision in columns:
            key = ArtifactKey(name, precision, backend)
            cells.append(f"{onnx_export.file_size(folder.path(key)) / 2**20:.1f} MiB" if folder.has(key) else "-")
        check = compat.get(name, {})
        lines.append(f"| {name} | {g.role} | " + " | ".join(cells) + f" | {res.timings.get('export_' + name, 0):.1f} | "
                     f"{'ok' if check.get('ok') else 'PROBLEMS' if check else '-'} |")
    return "\n".join(lines)


def build_tensorrt(folder: ExportFolder, graphs: tp.Dict[str, GraphSpec], opts: ExportOptions) -> None:
    """TensorRT op/dtype/profile check of every graph (always); engines when asked for, built by the same
    torch-free builder as ``jasco-run build-engines`` (jasco_runtime.tensorrt.build)."""
    from jasco_runtime.tensorrt.build import BuildOptions, build_folder
    from jasco_runtime.tensorrt.versions import TensorRTUnavailable

    from .tensorrt.check import check_trt_compatibility

    info: tp.Dict[str, tp.Any] = {"compatibility": {}}
    for name, spec in graphs.items():
        fp16 = ArtifactKey(name, "fp16", "onnx")
        src = folder.path(fp16 if folder.has(fp16) else ArtifactKey(name, "fp32", "onnx"))
        report = check_trt_compatibility(src, profiles=spec.profile_shapes(), runtime_shapes=spec.runtime_shapes())
        info["compatibility"][name] = report.to_dict()
    if opts.backend == "onnx":
        info["skipped"] = "not requested (--backend onnx)"
        folder.set_record("tensorrt", info)
        return
    folder.set_record("tensorrt", info)
    try:
        build_folder(folder, BuildOptions(graphs=list(graphs)), log=_log)
    except TensorRTUnavailable as exc:
        if opts.backend == "trt":
            raise JascoError(f"TensorRT engines were requested but cannot be built here: {exc}") from exc
        _log(f"TensorRT skipped: {exc}")
        folder.set_record("tensorrt", {**info, "skipped": str(exc)})
