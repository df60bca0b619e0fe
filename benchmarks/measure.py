"""Step 3 of a benchmark run: measure. Clocks and statistics, then the measurement loops.

Every sample is a host wall-clock interval around one call that follows :data:`.variants.TIMING_RULES`
(inputs pre-placed, outputs back in host memory, so the clock always ends after the device finished).
Measurements are interleaved (repeat r of every variant before repeat r+1), so slow drifts of a shared
machine hit all variants alike. Each sample also records the process CPU time over wall time, which
exposes other processes competing for the cores. This step only records: speed-ups, errors and
utilisation are derived from its records in :mod:`.assess`.
"""
from __future__ import annotations

import gc
import logging
import sys
import tempfile
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if tp.TYPE_CHECKING:  # pragma: no cover
    from .memory import MemoryProbe
    from .plan import Plan
    from .prepare import Prepared

logger = logging.getLogger("benchmarks")


def stats(samples: tp.Sequence[float]) -> tp.Dict[str, tp.Any]:
    """median, p10, p90, mean, min, max and n of a list of seconds."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": None, "p10": None, "p90": None, "mean": None, "min": None, "max": None}
    return {"n": int(a.size), "median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


@dataclass
class Sample:
    seconds: float
    cpu_util: tp.Optional[float] = None  # process CPU seconds / wall seconds (2.0 = two cores busy)


def time_call(fn: tp.Callable[[], tp.Any]) -> Sample:
    """Time one call on the host clock (the call returns host outputs, so the device has finished)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return Sample(wall, (time.process_time() - c0) / wall if wall > 0 else None)


@dataclass
class Timings:
    """Samples per (variant, measurement key)."""

    samples: tp.Dict[tp.Tuple[str, str], tp.List[Sample]] = field(default_factory=dict)

    def add(self, variant: str, key: str, sample: Sample) -> None:
        self.samples.setdefault((variant, key), []).append(sample)

    def summary(self, variant: str, key: str) -> tp.Optional[tp.Dict[str, tp.Any]]:
        got = self.samples.get((variant, key))
        if not got:
            return None
        out = stats([s.seconds for s in got])
        utils = [s.cpu_util for s in got if s.cpu_util is not None]
        if utils:
            out["cpu_util_median"] = float(np.median(utils))
        return out


@dataclass
class Measurements:
    """What was measured, raw: samples, outputs for the cross-backend check, solve latents, memory."""

    keys: tp.List[str] = field(default_factory=list)  # measurement keys in order (components, then end to end)
    timings: Timings = field(default_factory=Timings)
    outputs: tp.Dict[tp.Tuple[str, str], np.ndarray] = field(default_factory=dict)  # (variant, key) → principal output
    failures: tp.Dict[str, tp.Dict[str, str]] = field(default_factory=dict)  # variant → key → error
    e2e: tp.Dict[tp.Tuple[str, str], tp.Dict[str, tp.Any]] = field(default_factory=dict)  # nfe, per-stage seconds
    solves: tp.Dict[str, tp.Dict[str, tp.Any]] = field(default_factory=dict)  # variant → latent-quality solve
    quality_reference: tp.Optional[str] = None
    isolated: tp.Dict[str, tp.Dict[str, tp.Any]] = field(default_factory=dict)  # variant → its own process's peaks
    rss_peak: tp.Dict[str, int] = field(default_factory=dict)  # bytes, timing process, while the variant ran
    gpu_peak: tp.Dict[str, int] = field(default_factory=dict)
    torch_cuda_max_allocated: tp.Optional[int] = None

    def failed(self, name: str, key: str, exc: BaseException) -> None:
        logger.error("%s failed on %s: %s: %s", name, key, type(exc).__name__, exc)
        self.failures.setdefault(name, {})[key] = f"{type(exc).__name__}: {str(exc)[:300]}"


def measure_components(plan: "Plan", prep: "Prepared", probe: "MemoryProbe", m: Measurements) -> None:
    """Warm-up (keeping the first outputs), then ``repeats`` interleaved timed calls per component key."""
    from .variants import to_numpy

    for key in [k for k, _ in prep.workload.component_inputs(prep.components)]:
        logger.info("measuring %s", key)
        m.keys.append(key)
        active = {}
        for name, v in prep.variants.items():
            try:
                with probe.track(name):
                    for i in range(plan.warmup):
                        out = v.call[key]()
                        if i == 0:
                            m.outputs[(name, key)] = to_numpy(out)
                active[name] = v
            except Exception as exc:  # e.g. torch.compile without a compiler: keep the other variants
                m.failed(name, key, exc)
        for _ in range(plan.repeats):
            for name, v in active.items():
                with probe.track(name):
                    m.timings.add(name, key, time_call(v.call[key]))


def measure_end_to_end(plan: "Plan", prep: "Prepared", probe: "MemoryProbe", m: Measurements) -> None:
    """One warm-up generation (its latents kept), then ``e2e_repeats`` interleaved timed generations."""
    if "end_to_end" not in prep.components:
        return
    for b in plan.batches:
        key = f"end_to_end/b{b}"
        logger.info("measuring %s", key)
        m.keys.append(key)
        active = {}
        for name, v in prep.variants.items():
            if key not in v.e2e:
                continue
            try:
                with probe.track(name):
                    out = v.e2e[key]()
                latents, nfe = out[0], out[2]
                traffic = out[3] if len(out) > 3 else None  # runtime variants: flow-step host↔device per NFE
            except Exception as exc:
                m.failed(name, key, exc)
                continue
            active[name] = v
            m.outputs[(name, key)] = latents
            m.e2e[(name, key)] = {"nfe": nfe, "stages": {}, "traffic": traffic}
        for _ in range(plan.e2e_repeats):
            for name, v in active.items():
                got: tp.List[tp.Any] = []
                with probe.track(name):
                    sample = time_call(lambda: got.append(v.e2e[key]()))  # noqa: B023 - called right here
                m.timings.add(name, key, sample if v.device == "cpu" else Sample(sample.seconds))
                for stage, seconds in got[0][1].items():
                    m.e2e[(name, key)]["stages"].setdefault(stage, []).append(seconds)


QUALITY_REFERENCES = ("ort-cpu:fp32", "torch:fp32", "ort-cuda:fp32", "torch-cuda:fp32")


def measure_quality(plan: "Plan", prep: "Prepared", probe: "MemoryProbe", m: Measurements) -> None:
    """The whole solve (same noise, same conditions) with each variant's flow step: the latents of the
    reduced-precision variants (``--quality all``: every variant) and of an fp32 reference."""
    if plan.quality == "none" or "flow_step" not in prep.components:
        return
    from jasco_runtime.guidance import combine_vector_fields
    from jasco_runtime.solvers import SOLVERS

    wl, b0 = prep.workload, plan.batches[0]
    ref = next((n for n in QUALITY_REFERENCES if n in prep.variants), None)
    todo = [n for n, v in prep.variants.items() if v.flow is not None and n != ref
            and (plan.quality == "all" or not v.precision.startswith("fp32"))]
    if ref is None or not todo:
        return
    m.quality_reference = ref
    solver = SOLVERS[plan.solver]
    for name in [ref] + todo:
        v = prep.variants[name]
        logger.info("latent quality: %s %d-step solve with %s", plan.solver, plan.steps, name)

        def vector_field(t: float, z: np.ndarray, v=v) -> np.ndarray:
            return combine_vector_fields(v.flow(wl.flow_inputs(b0, t, z)), wl.terms)

        t0 = time.perf_counter()
        with probe.track(name):
            noise = wl.batches[b0].noise
            res = solver(vector_field, noise) if plan.solver == "dopri5" else solver(vector_field, noise, plan.steps)
        m.solves[name] = {"latents": res.z, "nfe": int(res.nfe), "batch": b0, "seconds": time.perf_counter() - t0}


def measure_isolated_memory(plan: "Plan", prep: "Prepared", m: Measurements) -> None:
    """Peak memory of each variant in a process of its own (:mod:`.memory`)."""
    measured = [c for c in prep.components if c != "end_to_end"]
    if plan.memory != "isolated" or not measured:
        return
    from .memory import cuda_device_uuid, isolated_memory, save_inputs

    with tempfile.TemporaryDirectory(prefix="jasco-bench-") as tmp:
        npz = save_inputs(prep.workload, measured, Path(tmp) / "inputs.npz")
        for name, v in prep.variants.items():
            logger.info("peak memory of %s in its own process", name)
            m.isolated[name] = isolated_memory({
                "backend": v.backend, "precision": v.precision, "load_id": prep.model.load_id,
                "export_dir": str(prep.export_dirs.get("trt" if v.backend == "trt" else "onnx", "")),
                "components": measured, "inputs": str(npz), "solver": plan.solver, "steps": plan.steps,
                "threads": plan.threads, "gpu_uuid": cuda_device_uuid()})


def measure(plan: "Plan", prep: "Prepared", probe: "MemoryProbe") -> Measurements:
    """Every measurement of the run, in order: components, end to end, latent quality, memory."""
    gc.collect()
    m = Measurements()
    measure_components(plan, prep, probe, m)
    measure_end_to_end(plan, prep, probe, m)
    measure_quality(plan, prep, probe, m)
    measure_isolated_memory(plan, prep, m)
    m.rss_peak, m.gpu_peak = dict(probe.rss_peak), dict(probe.gpu_peak)
    torch = sys.modules.get("torch")
    if torch is not None and any(v.device == "cuda" and v.backend.startswith("torch") for v in prep.variants.values()):
        m.torch_cuda_max_allocated = int(torch.cuda.max_memory_allocated())
    return m
