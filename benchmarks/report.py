"""Step 5 of a benchmark run: the report. The results document (``results.json``, schema
:data:`SCHEMA`), its markdown tables and a latency plot (matplotlib, Agg), written atomically."""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import time
import typing as tp
from pathlib import Path

from jasco_runtime.files import atomic_write_bytes, atomic_write_text

if tp.TYPE_CHECKING:  # pragma: no cover
    from .measure import Measurements
    from .plan import Plan
    from .prepare import Prepared

SCHEMA = "jasco-trt-bench/2"
RTF_DEFINITION = ("wall seconds / seconds of audio produced (batch × duration); < 1 is faster than real time; "
                  "rtf_flow counts only the solver's flow-step evaluations")
FLOPS_CONVENTION = "2 FLOPs per multiply-accumulate of every matrix product; element-wise ops excluded"
MEMORY_NOTE = ("rss_peak_mb: peak RSS (VmHWM) of a process that builds only this variant and runs each measured "
               "component once (--memory isolated; runtime variants never import torch); shared_process_rss_peak_mb: "
               "RSS of the timing process, which holds every variant and the PyTorch reference")


def document(plan: "Plan", prep: "Prepared", m: "Measurements", assessed: tp.Dict[str, tp.Any],
             started: float) -> tp.Dict[str, tp.Any]:
    """The results document: what ran where, the measurements and what they mean."""
    from .assess import targets
    from .variants import TIMING_RULES
    from .workload import CFG

    wl, jasco = prep.workload, prep.reference
    tc = jasco.cfg.transformer
    machine = {**prep.machine, "loadavg_end": list(os.getloadavg())}
    return {
        "schema": SCHEMA,
        "command": plan.command,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "config": {"model": plan.model, "load_id": prep.model.load_id, "preset": prep.model.preset,
                   "batches": list(plan.batches), "cfg": plan.cfg, "cfg_coefs": list(CFG[plan.cfg]),
                   "cfg_terms": len(wl.terms), "terms": [f"{t.kind}={t.weight:g}" for t in wl.terms],
                   "solver": plan.solver, "steps": plan.steps, "nfe_per_generation": wl.nfe(),
                   "repeats": plan.repeats, "warmup": plan.warmup, "e2e_repeats": plan.e2e_repeats,
                   "components": prep.components, "threads": plan.threads, "interleaved": True,
                   "dims": {"dim": tc.dim, "layers": tc.num_layers, "heads": tc.num_heads, "ffn": tc.dim_feedforward,
                            "frames": jasco.n_frames, "audio_seconds": wl.duration},
                   "rtf_definition": RTF_DEFINITION},
        "timing_rules": TIMING_RULES,
        "peaks": prep.peaks,
        "flops": assessed["flops"],
        "flops_convention": FLOPS_CONVENTION,
        "variants": assessed["variants"],
        "skipped": prep.skipped,
        "setup_seconds": prep.setup_seconds,
        "memory_note": MEMORY_NOTE,
        "targets": targets(assessed["variants"], plan.solver, plan.steps),
        "wall_seconds": time.perf_counter() - started,
    }


def header(results: tp.Dict[str, tp.Any]) -> str:
    m = results["machine"]
    return (f"# JASCO benchmark — {results['config']['model']}\n\n"
            f"- date: {results['date']}\n- machine: {m['cpu'].get('model_name')} ({m['cpu'].get('physical_cores')} "
            f"cores, {m['threads']} threads){' + ' + m['gpu'] if m.get('gpu') else ''}; load average at start "
            f"{m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}\n"
            f"- command: `{results['command']}`\n\n")


def write(results: tp.Dict[str, tp.Any], out: Path) -> tp.Dict[str, Path]:
    """``results.json``, ``results.md`` and ``latency.png`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "latency.png"}
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], header(results) + markdown(results))
    atomic_write_bytes(paths["plot"], plot(results))
    return paths

COMPONENT_TITLES = {"text_encoder": "text enc", "drums_encoder": "drums enc", "flow_step": "flow step",
                    "decoder": "decoder", "end_to_end": "end to end"}


def _key_title(key: str, results: tp.Dict[str, tp.Any]) -> str:
    comp, _, b = key.partition("/")
    title = COMPONENT_TITLES.get(comp, comp)
    if not b:
        return title
    batch = int(b[1:])
    if comp in ("flow_step", "text_encoder"):
        rows = batch * int(results["config"]["cfg_terms"])
        return f"{title} B={batch} ({rows} rows)"
    return f"{title} B={batch}"


def _fmt_s(x: tp.Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def _fmt_x(x: tp.Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}×"


def _fmt_mb(x: tp.Optional[float]) -> str:
    return "-" if x is None else (f"{x / 1024:.2f} GiB" if x >= 1024 else f"{x:.0f} MiB")


def measurement_keys(results: tp.Dict[str, tp.Any]) -> tp.List[str]:
    order = {c: i for i, c in enumerate(COMPONENT_TITLES)}
    keys = {k for v in results["variants"].values() for k in v["components"]}
    return sorted(keys, key=lambda k: (order.get(k.split("/")[0], 99), k))


def markdown(results: tp.Dict[str, tp.Any]) -> str:
    """Latency table (median [p10–p90]) and a per-variant summary table."""
    keys = measurement_keys(results)
    variants = results["variants"]
    lines = ["| variant | " + " | ".join(_key_title(k, results) for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, v in variants.items():
        cells = []
        for k in keys:
            c = v["components"].get(k)
            if not c or c.get("median") is None:
                cells.append("-")
                continue
            cells.append(f"{_fmt_s(c['median'])} [{_fmt_s(c['p10'])}–{_fmt_s(c['p90'])}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out = ["Latency, median [p10–p90] of the timed repeats (after warm-up):", "", *lines, ""]

    flow_keys = [k for k in keys if k.startswith("flow_step/")]
    e2e_keys = [k for k in keys if k.startswith("end_to_end/")]
    fk = flow_keys[0] if flow_keys else None
    ek = e2e_keys[0] if e2e_keys else None
    head = ["variant"]
    if fk:
        head += [f"flow-step speed-up ({_key_title(fk, results)})", "achieved GFLOP/s", "of measured GEMM peak",
                 "of nominal fp32 peak"]
    if ek:
        head += ["e2e speed-up", "RTF (e2e)", "host↔device per NFE"]
    elif fk:
        head += ["RTF (flow only)"]
    head += ["flow out rel-L2", "latents rel-L2", "peak RSS", "flow artifact"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in variants.items():
        cells = [name]
        if fk:
            c = v["components"].get(fk, {})
            cells.append(" / ".join(f"{_fmt_x(s)} vs {b}" for b, s in c.get("speedup", {}).items()) or "-")
            cells.append("-" if c.get("gflops_per_s") is None else f"{c['gflops_per_s']:.0f}")
            u = c.get("utilisation", {})
            own = u.get(f"practical_{v.get('precision')}")
            if own is not None:  # reduced precision: against the GEMM rate of its own precision
                cells.append(f"{100 * own:.0f} % ({v['precision']} peak)")
            else:
                cells.append("-" if u.get("practical") is None else f"{100 * u['practical']:.0f} %")
            cells.append("-" if u.get("nominal") is None else f"{100 * u['nominal']:.0f} %")
        if ek:
            c = v["components"].get(ek, {})
            cells.append(" / ".join(f"{_fmt_x(s)} vs {b}" for b, s in c.get("speedup", {}).items()) or "-")
            cells.append("-" if c.get("rtf") is None else f"{c['rtf']:.3f}")
            cells.append(_fmt_traffic(c.get("traffic_per_nfe")))
        elif fk:
            c = v["components"].get(fk, {})
            cells.append("-" if c.get("rtf_flow") is None else f"{c['rtf_flow']:.2f}")
        c = v["components"].get(fk, {}) if fk else {}
        cells.append("-" if c.get("output_rel_l2") is None else f"{c['output_rel_l2']:.1e}")
        q = v.get("quality") or {}
        cells.append("reference" if q.get("role") == "reference" else
                     "-" if q.get("latents_rel_l2") is None else f"{q['latents_rel_l2']:.1e}")
        cells.append(_fmt_mb(v.get("memory", {}).get("rss_peak_mb")))
        art = v.get("artifacts", {}).get("flow_step", {})
        cells.append(_fmt_mb(art["bytes"] / 2 ** 20) if art.get("bytes") else "-")
        rows.append("| " + " | ".join(cells) + " |")
    out += ["Summary:", "", *rows]
    if results.get("timing_rules"):
        out += ["", f"Timing rules: {results['timing_rules']}"]
    if results.get("targets"):
        out += ["", "Targets:", ""]
        for t in results["targets"]:
            status = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
            out.append(f"- {t['goal']}: {t['value']} → {status}")
    return "\n".join(out) + "\n"


def _fmt_traffic(t: tp.Optional[tp.Mapping[str, tp.Any]]) -> str:
    """The ODE loop's copies per vector-field evaluation (host→device / device→host bytes, allocations), where
    the state lived, and what a solve copies once (conditions and noise in, the final state out)."""
    if not t:
        return "-"
    mb = lambda b: f"{b / 2 ** 20:.2f} MB"  # noqa: E731
    text = f"H→D {mb(t['h2d_bytes_per_nfe'])}, D→H {mb(t['d2h_bytes_per_nfe'])}, {t['allocations_per_nfe']:g} alloc"
    if "ode_loop" in t:
        text = f"{t['ode_loop']} loop: {text}"
    if "h2d_bytes_per_solve" in t:
        text += f" (per solve: H→D {mb(t['h2d_bytes_per_solve'])}, D→H {mb(t['d2h_bytes_per_solve'])})"
    return text


def plot(results: tp.Dict[str, tp.Any]) -> bytes:
    """PNG bytes of grouped bars: median latency per measurement (log scale) and variant, p10–p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = measurement_keys(results)
    names = list(results["variants"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(keys) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for i, name in enumerate(names):
        comps = results["variants"][name]["components"]
        med = np.array([comps.get(k, {}).get("median") or np.nan for k in keys], dtype=float)
        lo = np.array([comps.get(k, {}).get("p10") or np.nan for k in keys], dtype=float)
        hi = np.array([comps.get(k, {}).get("p90") or np.nan for k in keys], dtype=float)
        err = np.vstack([np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)])
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, med, width, yerr=np.nan_to_num(err), capsize=2, label=name)
        if len(keys) * len(names) <= 24:  # label the medians while they stay readable
            ax.bar_label(bars, labels=[_fmt_s(m) if np.isfinite(m) else "" for m in med], fontsize=6, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels([_key_title(k, results).replace(" (", "\n(") for k in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (median, p10–p90)")
    cfg = results["config"]
    ax.set_title(f"JASCO {cfg['model']} · {results['machine'].get('cpu', {}).get('model_name', '')}"
                 f"{' + ' + results['machine']['gpu'] if results['machine'].get('gpu') else ''} · cfg {cfg['cfg']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
