"""``jasco-export``: checkpoint → ONNX graphs (fp32, mixed fp16) → TensorRT engines → parity report.

The orchestration: options, the output folder, then the manifest (:mod:`.manifest`), each graph's artifacts
(:mod:`.artifacts`), the TensorRT step, the golden set and the parity gate.  Everything is written to a temporary
sibling folder and renamed into place at the end, so a failure never leaves a half-written output folder.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jasco_runtime.chords import save_chord_mapping_json
from jasco_runtime.export_folder import (EXPORT_TARGETS, PRECISIONS, ArtifactKey, Backend, CompatibilityRecord,
                                         ExportFolder, Precision, TensorRTRecord)
from jasco_runtime.signals import sigterm_interrupts
from jasco_runtime.verify import failures, format_table, verify_folder

from . import progress
from .artifacts import export_artifacts
from .errors import InputError, JascoError
from .graphs import onnx_export
from .graphs.separator import separator_record
from .graphs.spec import MAX_DURATION, GraphSpec, declare_graphs
from .manifest import build_manifest, save_tokenizer, tables
from .output_folder import OutputFolder, inputs_of
from .reference.jasco import JASCO
from .separator import resolve_separator

logger = logging.getLogger(__name__)
# torch.onnx exports opsets 14+ (LayerNormalization needs 17 for one node); ONNX Runtime 1.17 reads up to 20
MIN_OPSET, MAX_OPSET = 17, 20


def export_target(backend: str) -> str:
    """``--backend`` as recorded: a :class:`Backend` value (``onnx`` → onnxruntime: graphs only; ``trt`` →
    tensorrt: engines required) or ``all`` (engines where TensorRT works)."""
    return backend if backend in EXPORT_TARGETS else Backend.parse(backend).value


@dataclass
class ExportOptions:
    model: str
    out: tp.Optional[Path] = None
    precisions: tp.Tuple[str, ...] = ("fp32", "fp16")
    backend: str = "onnxruntime"  # any Backend spelling (onnx, trt, ...) or all
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
    max_duration: float = MAX_DURATION  # longest song (s) the decoder is exported for; recorded in the manifest
    separator: tp.Optional[str] = "auto"  # auto | htdemucs | hf://org/htdemucs | PATH.safetensors | none (separator.py)

    @property
    def target(self) -> str:
        return export_target(self.backend)

    @property
    def builds_engines(self) -> bool:
        return self.target != Backend.ONNXRUNTIME.value


@dataclass
class ExportResult:
    out: Path
    folder: ExportFolder
    parity: tp.Dict[str, tp.Any]
    timings: tp.Dict[str, float] = field(default_factory=dict)
    late_signal: tp.Optional[str] = None  # SIGINT/SIGTERM that arrived while the finished export was put in place

    @property
    def manifest(self) -> tp.Dict[str, tp.Any]:
        """The manifest as JSON (a copy)."""
        return self.folder.to_dict()


def default_out(model: str) -> Path:
    return Path("engines") / Path(model.rstrip("/")).name


def output_folder(opts: ExportOptions) -> OutputFolder:
    """``--out`` checked against the rules of :mod:`jasco_export.output_folder` (no model needed)."""
    out = Path(opts.out) if opts.out is not None else default_out(opts.model)
    return OutputFolder(out, force=opts.force, protected=inputs_of(opts.model, opts.t5, opts.chords_mapping))


def check_options(opts: ExportOptions) -> None:
    """Every option checked before any heavy work (loading a checkpoint takes minutes at 1B)."""
    for p in opts.precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {p!r}; use any of {', '.join(PRECISIONS)}")
    if Precision.FP32 not in opts.precisions:
        raise InputError("--precision must include fp32 (the reference graphs the others derive from and fall back to)")
    if opts.backend not in EXPORT_TARGETS and opts.backend not in Backend.spellings():
        raise InputError(f"unknown backend {opts.backend!r}; use one of {', '.join(Backend.choices(*EXPORT_TARGETS))}")
    if opts.builds_engines and Precision.FP16 not in opts.precisions:
        raise InputError(f"--backend {opts.backend} builds FP16 engines from the mixed-fp16 ONNX graphs; add fp16 "
                         "to --precision")
    if not opts.max_duration > 0:
        raise InputError(f"max_duration must be > 0 seconds, got {opts.max_duration}")
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
    with output_folder(opts) as target:
        if target.replaces:
            progress.log(f"--force: {target.out} is {target.replaces}; it is replaced once the new export is complete")
        return _export_into(target, opts)


def _export_into(target: OutputFolder, opts: ExportOptions) -> ExportResult:
    out = target.out
    timings: tp.Dict[str, float] = {}
    t0 = time.perf_counter()
    progress.log(f"loading {opts.model}")
    jasco = JASCO.get_pretrained(opts.model, device="cpu", chords_mapping_path=opts.chords_mapping, t5=opts.t5,
                                 revision=opts.revision)
    timings["load"] = time.perf_counter() - t0
    separator = resolve_separator(opts.separator, "self_wav" in jasco.model.condition_provider.conditioners,
                                  progress.log)
    jasco.separator = separator.bag if separator else None  # declare_graphs adds drums_separator
    declared = declare_graphs(jasco, max_batch=opts.max_batch, max_text_tokens=opts.max_text_tokens,
                              max_duration=opts.max_duration)
    runtime_graphs = [name for name, g in declared.items() if g.role == "runtime"]
    graphs = select_graphs(declared, opts.graphs)
    del declared
    tmp = target.temp_dir()
    try:
        np.savez(tmp / "tables.npz", **tables(jasco))
        save_tokenizer(jasco.model.condition_provider.conditioners["description"].tokenizer, tmp / "tokenizer.json")
        manifest = build_manifest(jasco, graphs, opts, runtime_graphs)
        if separator is not None:  # the runtime separates every drums input with it (issue 18)
            manifest.conditioners["drums"]["separator"] = separator_record(separator.model, separator.name, 1)
        folder = ExportFolder.create(tmp, manifest)
        folder.add_file("tables", "tables.npz", save=False)
        folder.add_file("tokenizer", "tokenizer.json", save=False)
        if jasco.chords_mapping:
            save_chord_mapping_json(jasco.chords_mapping, tmp / "chords_mapping.json")
            folder.add_file("chords_mapping", "chords_mapping.json", save=False)
        spec = None  # the loop variable holds a graph module (and with it the memory-mapped checkpoint)
        for name, spec in graphs.items():
            t = time.perf_counter()
            export_artifacts(folder, spec, opts.precisions, opts.opset, jasco.cfg.transformer.num_heads)
            timings[f"export_{name}"] = time.perf_counter() - t
        folder.save()
        build_tensorrt(folder, graphs, opts)
        t = time.perf_counter()
        if opts.run_parity:
            from .parity.golden import write_golden_set

            folder.set_golden(write_golden_set(jasco, graphs, folder.golden_dir, opts.end_to_end, log=progress.log))
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
        target.commit(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportResult(out, folder.moved_to(out), parity, timings, late_signal=target.late_signal)


def _parity(folder: ExportFolder, opts: ExportOptions) -> tp.Dict[str, tp.Any]:
    """Every artifact of the folder against the golden set just written (see :mod:`jasco_runtime.verify`)."""
    from .parity.gate import cuda_providers, save_report

    if not opts.run_parity:
        return {"passed": None, "rows": [], "skipped": "parity not run (ExportOptions.run_parity=False)"}
    report = verify_folder(folder, providers=cuda_providers(), end_to_end=opts.end_to_end, log=progress.log,
                           digests=False)  # hashed as they were written, a moment ago
    report["source"] = "jasco-export (golden set written by the PyTorch reference in this run)"
    progress.log("\n" + format_table(report["rows"]))
    save_report(folder, report, "parity")
    return report


def summary_table(res: ExportResult) -> str:
    """Markdown table of what was written: per graph its artifacts and sizes, export time, TRT op check."""
    folder = res.folder
    compat = folder.tensorrt.compatibility
    columns = [(b.artifact, p.value) for b in Backend for p in Precision
               if b is Backend.ONNXRUNTIME or p is not Precision.INT8]
    lines = ["| graph | role | " + " | ".join(f"{b} {p}" for b, p in columns) + " | export s | TensorRT op check |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for name, g in folder.graphs.items():
        cells = []
        for backend, precision in columns:
            key = ArtifactKey(name, precision, backend)
            cells.append(f"{onnx_export.file_size(folder.path(key)) / 2**20:.1f} MiB" if folder.has(key) else "-")
        check = compat.get(name)
        lines.append(f"| {name} | {g.role} | " + " | ".join(cells) + f" | {res.timings.get('export_' + name, 0):.1f} | "
                     f"{'-' if check is None else 'ok' if check.ok else 'PROBLEMS'} |")
    return "\n".join(lines)


def build_tensorrt(folder: ExportFolder, graphs: tp.Dict[str, GraphSpec], opts: ExportOptions) -> None:
    """TensorRT op/dtype/profile check of every graph (always); engines when asked for, built by the same
    torch-free builder as ``jasco-run build-engines`` (jasco_runtime.tensorrt.build)."""
    from jasco_runtime.tensorrt.build import BuildOptions, build_folder
    from jasco_runtime.tensorrt.versions import TensorRTUnavailable

    from .tensorrt.check import check_trt_compatibility

    record = TensorRTRecord()
    for name, spec in graphs.items():
        fp16 = ArtifactKey(name, Precision.FP16, Backend.ONNXRUNTIME)
        src = folder.path(fp16 if folder.has(fp16) else ArtifactKey(name, Precision.FP32, Backend.ONNXRUNTIME))
        report = check_trt_compatibility(src, profiles=spec.profile_shapes(), runtime_shapes=spec.runtime_shapes())
        record.compatibility[name] = CompatibilityRecord.from_dict(report.to_dict(), f"tensorrt.compatibility.{name}")
    if not opts.builds_engines:
        record.skipped = f"not requested (--backend {opts.backend})"
        folder.set_tensorrt(record)
        return
    folder.set_tensorrt(record)
    try:
        build_folder(folder, BuildOptions(graphs=list(graphs)), log=progress.log)
    except TensorRTUnavailable as exc:
        if opts.target == Backend.TENSORRT.value:
            raise JascoError(f"TensorRT engines were requested but cannot be built here: {exc}") from exc
        progress.log(f"TensorRT skipped: {exc}")
        folder.set_tensorrt(TensorRTRecord(record.compatibility, skipped=str(exc), device=folder.tensorrt.device))
