"""Step 1 of a benchmark run: decide from the command line what will be measured, before any model loads.

A :class:`Plan` lists the (backend, precision) variants that run here, the ones skipped and why, the
components and batch sizes, and the measurement settings. Nothing in it depends on the model.
"""
from __future__ import annotations

import argparse
import os
import shlex
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from jasco_runtime.errors import InputError

from .variants import (BACKENDS, COMPONENTS, CPU_BASELINE, GPU_BACKENDS, GPU_BASELINE, GRAPH_OF, cuda_available,
                       unsupported_reason)


@dataclass(frozen=True)
class Plan:
    model: str  # what --model said
    variants: tp.Tuple[tp.Tuple[str, str], ...]  # (backend, precision) that run here, baselines first
    skipped: tp.Dict[str, str]  # "backend:precision" → why it does not run
    components: tp.Tuple[str, ...]
    batches: tp.Tuple[int, ...]
    cfg: str
    solver: str
    steps: int
    repeats: int
    warmup: int
    e2e_repeats: int
    quality: str  # none | reduced | all
    memory: str  # isolated | shared | none
    threads: int
    smoke: bool
    cache: Path
    fresh: bool
    parity: bool
    command: str

    @property
    def names(self) -> tp.List[str]:
        return [f"{b}:{p}" for b, p in self.variants]

    def graphs(self, has_drums: bool) -> tp.List[str]:
        """The graphs the planned components run (end to end: every graph the pipeline runs)."""
        comps = set(COMPONENTS[:-1]) if "end_to_end" in self.components else set(self.components)
        graphs = {GRAPH_OF[c] for c in comps if c in GRAPH_OF and (c != "drums_encoder" or has_drums)}
        if "end_to_end" in self.components:
            graphs.add("solver_step")  # the device-resident ODE loop (jasco_runtime/device_solve.py)
        return sorted(graphs)

    def onnx_precisions(self) -> tp.List[str]:
        return sorted({p for b, p in self.variants if b.startswith("ort-")})

    @property
    def uses_trt(self) -> bool:
        return any(b == "trt" for b, _ in self.variants)


def _csv(s: str) -> tp.List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def physical_cores() -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        return os.cpu_count() or 1


def plan_variants(backends_arg: str, precisions_arg: str, baseline: bool = True
                  ) -> tp.Tuple[tp.List[tp.Tuple[str, str]], tp.Dict[str, str]]:
    """(variants that run here, baselines first; {"backend:precision": why not} for the others)."""
    precisions = _csv(precisions_arg)
    if backends_arg == "auto":
        backends = ["torch", "ort-cpu"] + [b for b in GPU_BACKENDS if unsupported_reason(b, "fp16") is None]
    else:
        backends = _csv(backends_arg)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InputError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    wanted = [(b, p) for b in backends for p in precisions]
    if baseline:
        on_gpu = any(b in GPU_BACKENDS or (b == "torch-compile" and cuda_available()) for b, _ in wanted)
        on_cpu = any(b not in GPU_BACKENDS for b, _ in wanted)
        for flag, base in ((on_gpu, GPU_BASELINE), (on_cpu, CPU_BASELINE)):
            pair = tuple(base.split(":"))
            if flag and pair not in wanted:
                wanted.insert(0, pair)  # type: ignore[arg-type]
    run, skipped = [], {}
    for b, p in wanted:
        reason = unsupported_reason(b, p)
        if reason is None:
            run.append((b, p))
        else:
            skipped[f"{b}:{p}"] = reason
    return run, skipped


def make_plan(args: argparse.Namespace) -> Plan:
    """Validate the arguments (InputError naming the bad one) and fix what the run will do."""
    components = list(COMPONENTS) if args.components == "all" else _csv(args.components)
    bad = [c for c in components if c not in COMPONENTS]
    if bad:
        raise InputError(f"unknown component(s) {', '.join(bad)}; choose from {', '.join(COMPONENTS)} or all")
    try:
        batches = [int(b) for b in _csv(args.batch)]
    except ValueError:
        raise InputError(f"--batch must be a comma list of positive integers, got {args.batch!r}") from None
    if not batches or min(batches) < 1:
        raise InputError(f"--batch must be a comma list of positive integers, got {args.batch!r}")
    for flag, value, least in (("--steps", args.steps, 1), ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 1),
                               ("--threads", args.threads, 1), ("--e2e-repeats", args.e2e_repeats, 1)):
        if value is not None and value < least:
            raise InputError(f"{flag} must be at least {least}, got {value}")
    variants, skipped = plan_variants(args.backends, args.precision, baseline=not args.no_baseline)
    if not variants:
        raise InputError("no requested variant runs here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Plan(
        model=args.model, variants=tuple(variants), skipped=skipped, components=tuple(components),
        batches=tuple(batches), cfg=args.cfg, solver=args.solver, steps=args.steps, repeats=args.repeats,
        warmup=args.warmup, e2e_repeats=args.e2e_repeats if args.e2e_repeats is not None else args.repeats,
        quality=args.quality, memory=args.memory, threads=int(args.threads or physical_cores()), smoke=args.smoke,
        cache=Path(args.cache), fresh=args.fresh, parity=args.parity,
        command="python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (getattr(args, "argv", None) or [])))
