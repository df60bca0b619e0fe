"""Fail-closed verification of an export folder: every artifact the manifest lists, on the golden set.

Used by the export's parity gate (right after the PyTorch reference wrote the golden set), by
``jasco-export verify`` (fresh references from the model) and by ``jasco-run verify`` (stored references,
no torch, no checkpoint: what an edge target runs after building its engines).

Every artifact gets a row per golden case.  A missing file, a load error, a run error or a non-finite
output is FAIL with its reason.  SKIP only for reasons declared up front: the graph does not declare that
precision (kept fp32), or the artifact's backend is not installed on this machine / not selected.
``passed`` needs no FAIL, a row for every listed artifact, and the end-to-end rows.

Gates: fp32 ≤ 1e-4 max abs per graph, ≤ 1e-3 relative L2 end to end (the drums encoder's argmin codes can
flip on near ties between two correct float32 implementations; seen at 400M: 1 code in 500); fp16 ≤ 1e-2
relative L2 per graph, ≤ 3e-2 on end-to-end latents; int8 (flow step) ≤ 5e-2 per evaluation, ≤ 2e-2 end to end.
"""
from __future__ import annotations

import math
import platform
import time
import typing as tp
from dataclasses import dataclass

import numpy as np

from .errors import InputError, JascoError, first_line
from .export_folder import ArtifactKey, Backend, ExportFolder, Precision
from .golden import GoldenSet, load_golden
from .metrics import max_abs, rel_l2

FP32_MAX_ABS = 1e-4
FP16_REL_L2 = 1e-2
FP16_E2E_REL_L2 = 3e-2
INT8_REL_L2 = 5e-2
INT8_E2E_REL_L2 = 2e-2
E2E_FP32_REL_L2 = 1e-3
CODE_AGREEMENT = 0.99
BLUR = 3  # drums temporal blur factor (BEHAVIOUR.md §6): a flipped code changes its whole group

THRESHOLDS = {"fp32_max_abs": FP32_MAX_ABS, "fp16_rel_l2": FP16_REL_L2, "fp16_e2e_rel_l2": FP16_E2E_REL_L2,
              "e2e_fp32_rel_l2": E2E_FP32_REL_L2, "int8_rel_l2": INT8_REL_L2, "int8_e2e_rel_l2": INT8_E2E_REL_L2,
              "drums_code_agreement": CODE_AGREEMENT}
Row = tp.Dict[str, tp.Any]


@dataclass
class Gate:
    metric: str  # max_abs | rel_l2
    threshold: float


def graph_gate(key: ArtifactKey) -> Gate:
    """Per-graph gate of an artifact: by the precision it computes in."""
    if key.precision == "fp32":
        return Gate("max_abs", FP32_MAX_ABS)
    return Gate("rel_l2", INT8_REL_L2 if key.precision == "int8" else FP16_REL_L2)


def e2e_gate(precision: str) -> Gate:
    return Gate("rel_l2", {"fp32": E2E_FP32_REL_L2, "fp16": FP16_E2E_REL_L2, "int8": INT8_E2E_REL_L2}[precision])


def _row(check: str, key: tp.Optional[ArtifactKey], backend: str, precision: str, status: str, **extra: tp.Any) -> Row:
    return {"check": check, "artifact": str(key) if key else None, "precision": precision, "backend": backend,
            "max_abs": None, "rel_l2": None, "metric": "-", "threshold": None, "status": status, **extra}


def compare(check: str, key: tp.Optional[ArtifactKey], backend: str, precision: str, ref: np.ndarray,
            got: np.ndarray, gate: Gate, **extra: tp.Any) -> Row:
    """A gated row: FAIL on shape mismatch, non-finite output, or the metric above its threshold."""
    got = np.asarray(got)
    ma, rl = max_abs(got, ref), rel_l2(got, ref)
    value = ma if gate.metric == "max_abs" else rl
    ok = got.shape == np.shape(ref) and bool(np.isfinite(got).all()) and math.isfinite(value) and value <= gate.threshold
    row = _row(check, key, backend, precision, "PASS" if ok else "FAIL", **extra)
    row.update(max_abs=ma, rel_l2=rl, metric=gate.metric, threshold=gate.threshold)
    if not ok:
        row["reason"] = (f"shape {list(got.shape)} ≠ reference {list(np.shape(ref))}" if got.shape != np.shape(ref) else
                         "non-finite output (NaN/Inf)" if not np.isfinite(got).all() else
                         f"{gate.metric} {value:.3g} > {gate.threshold:g}")
    return row


def compare_drums(check: str, key: ArtifactKey, backend: str, ref: tp.Dict[str, np.ndarray],
                  got: tp.Dict[str, np.ndarray], gate: Gate) -> Row:
    """Drums encoder: layer-0 codes are argmin decisions with small margins (BEHAVIOUR.md §5), so a code may
    flip on a near tie between two correct implementations.  Gate on code agreement (≥ 99 %) and on the
    embedding error over the blur groups whose codes all agree."""
    ref_codes, got_codes = np.asarray(ref["codes"]), np.asarray(got["codes"])
    if ref_codes.shape != got_codes.shape:
        return compare(check, key, backend, key.precision, ref["drums"], got["drums"], gate)
    agree = float(np.mean(ref_codes == got_codes))
    keep = np.ones(ref_codes.shape, dtype=bool)
    for b, i in zip(*np.nonzero(ref_codes != got_codes)):
        s = (i // BLUR) * BLUR
        keep[b, s:s + BLUR] = False
    row = compare(check, key, backend, key.precision, ref["drums"][keep], np.asarray(got["drums"])[keep], gate,
                  code_agreement=agree, frames_compared=int(keep.sum()),
                  max_abs_all_frames=max_abs(got["drums"], ref["drums"]), note=f"codes agree {agree:.2%}")
    if agree < CODE_AGREEMENT and row["status"] == "PASS":
        row.update(status="FAIL", reason=f"codes agree {agree:.2%} < {CODE_AGREEMENT:.0%}")
    return row


def backend_available(backend: tp.Union[str, Backend]) -> tp.Optional[str]:
    """None when artifacts of ``backend`` (any :class:`Backend` spelling) can run here, else why not."""
    from .backends import available_backends

    backend = Backend.parse(backend)
    if backend.value in available_backends():
        return None
    return ("onnxruntime is not installed here (pip install onnxruntime)" if backend is Backend.ONNXRUNTIME else
            "TensorRT is not installed on this machine; run verify where the engines were built")


def verify_artifact(folder: ExportFolder, key: ArtifactKey, golden: GoldenSet,
                    providers: tp.Optional[tp.Sequence[str]], log: tp.Callable[[str], None]) -> tp.List[Row]:
    from .backends import open_engine

    backend = key.runtime.value
    cases = golden.graphs.get(key.graph)
    if not cases:
        return [_row(key.graph, key, backend, key.precision, "FAIL", reason="no golden inputs for this graph")]
    path = folder.folder / folder.artifact(key).file
    if not path.is_file():
        return [_row(key.graph, key, backend, key.precision, "FAIL", reason=f"file {path.name} is missing")]
    log(f"verify {key} (loading)")  # its own progress line: loading a large graph takes a while and memory
    try:
        engine = open_engine(folder, key, providers)
    except Exception as exc:  # noqa: BLE001 - fail closed: any load error is a FAIL row with its reason
        return [_row(key.graph, key, backend, key.precision, "FAIL",
                     reason=f"cannot load: {type(exc).__name__}: {first_line(exc, 200)}")]
    from .backends import run_chunked

    rows = []
    gate = graph_gate(key)
    try:
        for case, gc in cases.items():
            check = f"{key.graph}/{case}"
            log(f"verify {key} {case}")
            try:
                got = run_chunked(engine, gc.inputs)  # chunked to the engine's own profile, as the pipeline
            except Exception as exc:  # noqa: BLE001
                rows.append(_row(check, key, backend, key.precision, "FAIL",
                                 reason=f"failed to run: {type(exc).__name__}: {first_line(exc, 200)}"))
                continue
            missing = set(gc.outputs) - set(got)
            if missing:
                rows.append(_row(check, key, backend, key.precision, "FAIL", reason=f"outputs {sorted(missing)} missing"))
            elif key.graph == "drums_encoder" and "codes" in gc.outputs:
                rows.append(compare_drums(check, key, backend, gc.outputs, got, gate))
            elif key.graph == "drums_separator":  # both branches' outputs are gated (summed by the runtime)
                rows.extend(compare(f"{check}/{o}", key, backend, key.precision, gc.outputs[o], got[o], gate)
                            for o in gc.outputs)
            else:
                name = next(iter(gc.outputs))
                rows.append(compare(check, key, backend, key.precision, gc.outputs[name], got[name], gate))
    finally:
        engine.close()
    return rows


def pipeline_variants(folder: ExportFolder) -> tp.List[tp.Tuple[Backend, str]]:
    """(backend, precision) of every complete pipeline the folder holds."""
    names = folder.runtime_graphs()
    out: tp.List[tp.Tuple[Backend, str]] = []
    for precision in Precision.choices():
        if folder.has(ArtifactKey("flow_step", precision, Backend.ONNXRUNTIME)) and \
                all(folder.has(folder.resolve(n, Backend.ONNXRUNTIME, precision)) for n in names):
            out.append((Backend.ONNXRUNTIME, precision))
    if any(a.key.runtime is Backend.TENSORRT for a in folder.artifacts()):
        out.append((Backend.TENSORRT, Precision.FP16.value))
    return out


def verify_end_to_end(folder: ExportFolder, backend: tp.Union[str, Backend], precision: str, golden: GoldenSet,
                      providers: tp.Optional[tp.Sequence[str]], log: tp.Callable[[str], None]) -> tp.List[Row]:
    from .pipeline import JascoPipeline

    backend = Backend.parse(backend)
    rb = backend.value
    case = golden.e2e
    s = case.settings
    check = f"e2e/{s['solver']}{s['steps']}"
    log(f"verify end-to-end {rb} {precision} ({s['solver']} {s['steps']})")
    try:
        # one graph at a time: right after an export this runs next to the golden set, on an edge board next to little
        pipe = JascoPipeline.from_dir(folder.folder, backend=rb, providers=providers,
                                      precision=precision if backend is Backend.ONNXRUNTIME else None, low_memory=True)
        try:
            res = pipe.generate(case.prompts, chords=[tuple(c) for c in s["chords"]] if s.get("chords") else None,
                                drums=case.drums, drums_sample_rate=s.get("drums_sample_rate"), melody=case.melody,
                                cfg_coef_all=s["cfg_coef_all"], cfg_coef_txt=s["cfg_coef_txt"], solver=s["solver"],
                                steps=s["steps"], init_noise=case.init_noise, progress=False)
        finally:
            pipe.close()
    except Exception as exc:  # noqa: BLE001 - fail closed
        return [_row(check, None, rb, precision, "FAIL",
                     reason=f"runtime failed: {type(exc).__name__}: {first_line(exc, 200)}")]
    gate = e2e_gate(precision)
    rows = [compare(f"{check}-latents", None, rb, precision, case.latents, res.latents, gate)]
    audio = compare(f"{check}-audio", None, rb, precision, case.audio, res.audio, gate)
    if precision != "fp32" and audio["status"] == "FAIL" and np.isfinite(res.audio).all():
        audio.update(status="INFO", gate=False)  # reduced-precision audio is reported, the latents are gated
    rows.append(audio)
    return rows


def verify_folder(folder: ExportFolder, golden: tp.Optional[GoldenSet] = None, backends: tp.Optional[tp.Sequence[str]] = None,
                  providers: tp.Optional[tp.Sequence[str]] = None, end_to_end: bool = True,
                  log: tp.Callable[[str], None] = print, digests: bool = True) -> tp.Dict[str, tp.Any]:
    """Check every artifact of ``folder`` against ``golden`` (default: the folder's stored golden set).

    First every artifact file against its recorded sha256 (a damaged copy is one :class:`InputError` line naming
    the files, before anything runs).  ``backends``: the backends to run (any :class:`Backend` spelling); default
    every one installed here.  Artifacts of other backends get a SKIP row saying why.  Returns the report
    (``passed``, ``rows``, ``thresholds``).  ``digests=False``: the exporter, whose files were just hashed.
    """
    if digests:
        folder.check_digests(full=True)
    golden = golden if golden is not None else load_golden(folder)
    requested = {Backend.parse(b) for b in backends} if backends else None
    for b in requested or ():
        why = backend_available(b)
        if why:
            raise InputError(f"--backend {b} was asked for but {why}")
    unusable: tp.Dict[Backend, str] = {}
    for b in Backend:
        why = "not selected (--backend)" if requested is not None and b not in requested else backend_available(b)
        if why:
            unusable[b] = why
    rows: tp.List[Row] = []
    t0 = time.perf_counter()
    exported = folder.exported_precisions
    for name, g in folder.graphs.items():
        for precision in exported:
            if precision not in g.precisions:
                rows.append(_row(name, None, "-", precision, "SKIP",
                                 reason=f"declared: {name} is exported in {', '.join(g.precisions)} only (fp32 fallback)"))
    for art in folder.artifacts():
        if art.key.runtime in unusable:
            rows.append(_row(art.key.graph, art.key, art.key.runtime.value, art.key.precision, "SKIP",
                             reason=unusable[art.key.runtime]))
            continue
        rows.extend(verify_artifact(folder, art.key, golden, providers, log))
    if end_to_end:
        if golden.e2e is None:
            rows.append(_row("e2e", None, "-", "-", "FAIL", reason="the golden set has no end-to-end case"))
        else:
            for backend, precision in pipeline_variants(folder):
                if backend in unusable:
                    rows.append(_row("e2e", None, backend.value, precision, "SKIP", reason=unusable[backend]))
                else:
                    rows.extend(verify_end_to_end(folder, backend, precision, golden, providers, log))
    covered = {r["artifact"] for r in rows if r["artifact"]}
    uncovered = sorted(str(a.key) for a in folder.artifacts() if str(a.key) not in covered)
    failed = [r for r in rows if r["status"] == "FAIL"]
    passed = not failed and not uncovered and bool(rows)
    report = {"passed": passed, "folder": str(folder.folder), "model": folder.model_id, "thresholds": THRESHOLDS,
              "rows": rows, "uncovered": uncovered, "seconds": round(time.perf_counter() - t0, 2),
              "machine": {"platform": platform.platform(), "python": platform.python_version()}}
    if uncovered:
        report["reason"] = f"no check ran for {', '.join(uncovered)}"
    return report


def failures(report: tp.Mapping[str, tp.Any]) -> str:
    """One line naming what failed (for error messages)."""
    rows = [f"{r['check']} [{r['artifact'] or r['backend'] + ' ' + r['precision']}]: {r.get('reason', '')}"
            for r in report["rows"] if r["status"] == "FAIL"]
    if report.get("uncovered"):
        rows.append(f"unchecked: {', '.join(report['uncovered'])}")
    return "; ".join(rows)


def format_table(rows: tp.Sequence[Row]) -> str:
    """Markdown table of the rows (export gate, ``jasco-export verify`` and ``jasco-run verify`` print the same)."""
    def f(x: tp.Any) -> str:
        return "-" if x is None else f"{x:.2e}"

    lines = ["| check | artifact | backend | precision | max abs | rel L2 | threshold | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        thr = "-" if r["threshold"] is None else f"{r['metric']} ≤ {r['threshold']:.0e}"
        status = r["status"] + "".join(f" ({r[k]})" for k in ("reason", "note") if r.get(k))
        lines.append(f"| {r['check']} | {r['artifact'] or '-'} | {r['backend']} | {r['precision']} | {f(r['max_abs'])} | "
                     f"{f(r['rel_l2'])} | {thr} | {status} |")
    return "\n".join(lines)


class VerificationFailed(JascoError):
    """The folder did not pass (exit 1, not a bad-input 2)."""
