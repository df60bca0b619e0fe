"""Peak memory of ``jasco-export`` (and of the random-model writer) per phase, in this process.

    # export the 400M random model (fp32 + fp16, parity on) and report peak RSS per phase
    python -m benchmarks.export_memory export --model 400m-random --out /tmp/e400 --json /tmp/e400.json
    # the writer of the random models
    python -m benchmarks.export_memory make-tiny --preset 1b --json /tmp/mt1b.json

A thread samples the process's resident set (``/proc/self/status``: ``VmRSS``, ``RssAnon``) every
20 ms; phases are the exporter's progress lines (``loading …``, ``exporting flow_step …``,
``converting … to mixed fp16``, ``golden …`` (PyTorch reference outputs), ``verify …`` (ONNX Runtime
checks)), so the table shows which step sets the peak.  The
overall peak is the kernel's ``VmHWM`` (no sampling gap).  ``weights_gb`` is the fp32 weights the
export covers: every parameter and buffer of the JASCO model (EnCodec included) plus T5, counted once
per storage.  The goal (issue 12) is ``peak RSS ≤ 2.5 × weights``.

Resident file pages of memory-mapped checkpoints count in ``VmRSS`` (they are reclaimable page cache,
but the kernel reports them as resident); ``RssAnon`` is the part that is not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import typing as tp
from pathlib import Path

GB = 1e9


def _status() -> tp.Dict[str, int]:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``VmHWM`` of this process in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class PhaseSampler:
    """Samples RSS in a thread; ``phase(name)`` starts a new phase; ``report()`` gives peaks per phase."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.phases: tp.List[tp.Dict[str, tp.Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()
        self.phase("start")

    def phase(self, name: str) -> None:
        s = _status()
        with self._lock:
            now = time.perf_counter() - self.t0
            if self.phases:
                self.phases[-1]["end_s"] = now
            self.phases.append({"phase": name, "start_s": now, "end_s": None, "rss_start": s["VmRSS"],
                                "peak_rss": s["VmRSS"], "peak_anon": s["RssAnon"]})

    def _sample(self) -> None:
        s = _status()
        with self._lock:
            cur = self.phases[-1]
            cur["peak_rss"] = max(cur["peak_rss"], s["VmRSS"])
            cur["peak_anon"] = max(cur["peak_anon"], s["RssAnon"])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PhaseSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.phases[-1]["end_s"] = time.perf_counter() - self.t0

    def report(self) -> tp.Dict[str, tp.Any]:
        s = _status()
        return {"wall_s": time.perf_counter() - self.t0, "peak_rss_gb": s["VmHWM"] / GB,
                "peak_anon_gb": max(p["peak_anon"] for p in self.phases) / GB,
                "phases": [{**p, "rss_start": p["rss_start"] / GB, "peak_rss": p["peak_rss"] / GB,
                            "peak_anon": p["peak_anon"] / GB} for p in self.phases]}


def weights_bytes(*modules: tp.Any) -> int:
    """fp32 bytes of every parameter and buffer of ``modules``, each storage counted once."""
    seen, total = set(), 0
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += t.numel() * 4
    return total


def _phase_name(msg: str) -> tp.Optional[str]:
    """The phase a progress line starts (``None``: not a phase, e.g. the parity table)."""
    words = msg.split()
    if not words or words[0].startswith("|"):
        return None
    if words[0] in ("parity", "golden", "verify"):  # "golden flow_step random: …", "verify end-to-end …"
        return " ".join(words[:4]).rstrip(":,")
    return " ".join(words[:2])


def measure_export(argv: tp.Sequence[str], sampler: PhaseSampler) -> tp.Dict[str, tp.Any]:
    """Run ``jasco-export ARGV`` in this process with each progress line starting a phase."""
    from jasco_export import cli, exporter, progress
    from jasco_export.reference.jasco import JASCO

    info: tp.Dict[str, tp.Any] = {}
    log, load = progress.log, JASCO.get_pretrained

    def phase_log(msg: str) -> None:
        name = _phase_name(msg)
        if name:
            sampler.phase(name)
        log(msg)

    def counting_load(*a: tp.Any, **k: tp.Any) -> JASCO:
        jasco = load(*a, **k)
        t5 = jasco.model.condition_provider.conditioners["description"].t5
        info["weights_gb"] = weights_bytes(jasco.model, t5) / GB
        sampler.phase("loaded")
        return jasco

    def starts_phase(name: str, fn: tp.Callable[..., tp.Any]) -> tp.Callable[..., tp.Any]:
        def wrapped(*a: tp.Any, **k: tp.Any) -> tp.Any:
            sampler.phase(name)
            return fn(*a, **k)
        return wrapped

    saved = {k: getattr(exporter, k) for k in ("build_tensorrt", "_parity")}
    progress.log = phase_log  # every export step logs through jasco_export.progress.log
    exporter.build_tensorrt = starts_phase("tensorrt check", exporter.build_tensorrt)
    exporter._parity = starts_phase("parity: ONNX Runtime checks", exporter._parity)
    JASCO.get_pretrained = staticmethod(counting_load)  # type: ignore[assignment]
    try:
        info["exit_code"] = cli.main(list(argv))
    finally:
        for k, v in saved.items():
            setattr(exporter, k, v)
        progress.log = log
        JASCO.get_pretrained = staticmethod(load)  # type: ignore[assignment]
    return info


def measure_make_tiny(preset: str, out: Path, seed: int, sampler: PhaseSampler) -> tp.Dict[str, tp.Any]:
    import logging

    from jasco_export.tiny import presets

    class PhaseHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sampler.phase(record.getMessage()[:60])

    logger = logging.getLogger(presets.__name__)
    handler = PhaseHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        presets.make_tiny_models(out, seed=seed, force=True, preset=preset, variants=["chords-drums"])
    finally:
        logger.removeHandler(handler)
    return {"preset": preset}


def format_report(rep: tp.Dict[str, tp.Any]) -> str:
    lines = ["| phase | start s | duration s | RSS at start GB | peak RSS GB | peak anon GB |", "|---|---|---|---|---|---|"]
    for p in rep["phases"]:
        dur = (p["end_s"] or rep["wall_s"]) - p["start_s"]
        lines.append(f"| {p['phase']} | {p['start_s']:.1f} | {dur:.1f} | {p['rss_start']:.2f} | {p['peak_rss']:.2f} | "
                     f"{p['peak_anon']:.2f} |")
    w = rep.get("weights_gb")
    lines.append(f"\nwall {rep['wall_s']:.0f} s, peak RSS (VmHWM) {rep['peak_rss_gb']:.2f} GB, peak anon "
                 f"{rep['peak_anon_gb']:.2f} GB" + (f", fp32 weights {w:.2f} GB, ratio {rep['peak_rss_gb'] / w:.2f}"
                                                    if w else ""))
    return "\n".join(lines)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_memory", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="jasco-export with per-phase peak RSS; other arguments go to jasco-export")
    e.add_argument("--model", required=True, help="tiny | 400m-random | 1b-random | hub id | folder")
    e.add_argument("--json", type=Path, help="write the report here")
    m = sub.add_parser("make-tiny", help="write a random preset (chords-drums) into a scratch cache")
    m.add_argument("--preset", default="tiny")
    m.add_argument("--out", type=Path, default=Path("/tmp/jasco-make-tiny-memory"))
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--json", type=Path)
    a, rest = p.parse_known_args(argv)
    if a.cmd == "export":
        from .models import resolve_model  # sets HF_HUB_CACHE before huggingface_hub is imported

        ref = resolve_model(a.model)
        sampler = PhaseSampler()
        with sampler:
            info = measure_export(["--model", ref.load_id, *rest], sampler)
        rep = {"command": "export", "model": a.model, "args": rest, **info, **sampler.report()}
    else:
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        sampler = PhaseSampler()
        with sampler:
            info = measure_make_tiny(a.preset, a.out, a.seed, sampler)
        rep = {"command": "make-tiny", **info, **sampler.report()}
    print(format_report(rep), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rep, indent=2))
    return int(rep.get("exit_code", 0) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
