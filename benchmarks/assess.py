"""Step 4 of a benchmark run: derive the numbers the report states from what was measured.

Per variant and measurement key: latency statistics, speed-ups over the baselines measured in the same
run (baseline median / variant median), the output error against the fp32 baseline on the same inputs
(:func:`jasco_runtime.metrics.rel_l2`), FLOP rate and utilisation of the measured and nominal device
peaks (flow step), real-time factors; per variant the latent error of the whole solve; and the
project's benchmark targets. Pure: no model, no clock.
"""
from __future__ import annotations

import typing as tp

import numpy as np

from jasco_runtime.metrics import max_abs, rel_l2

from .variants import CPU_BASELINE, GPU_BASELINE

if tp.TYPE_CHECKING:  # pragma: no cover
    from .measure import Measurements
    from .plan import Plan
    from .prepare import Prepared

BASELINES = (CPU_BASELINE, GPU_BASELINE)
TARGETS_NOTE = "targets are stated for --model 400m-random, batch 1, demo cfg, on the 2-core AVX-512 CPU"
REDUCED_TARGET = (3.5, 2e-2)  # ≥ 3.5× torch eager fp32, latents rel-L2 ≤ 2e-2
FP32_TARGET = 2.2


def batch_of(key: str) -> int:
    return int(key.split("/b")[1]) if "/b" in key else 1


def speedups(timings: tp.Any, name: str, key: str, median: float) -> tp.Dict[str, float]:
    """baseline median / this variant's median, for each baseline measured on ``key`` (not itself)."""
    out = {}
    for base in BASELINES:
        s = timings.summary(base, key)
        if s and base != name and median:
            out[base] = s["median"] / median
    return out


def utilisation(gflops_per_s: float, device: str, precision: str, peaks: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Achieved rate over the measured (practical) and data-sheet (nominal) peaks of the device."""
    util: tp.Dict[str, tp.Any] = {}
    if device == "cpu":
        practical = peaks["cpu_measured"]["practical_fp32_gflops"]
        util["practical"] = gflops_per_s / practical
        util["practical_peak_gflops"] = practical
        nominal = peaks["cpu_nominal"].get("fp32_gflops")
        util["nominal"] = gflops_per_s / nominal if nominal else None
        util["nominal_peak_gflops"] = nominal
        # reduced precision: against the measured GEMM rate of that precision as well
        low = {"int8": "practical_int8_gops", "bf16": "practical_bf16_gflops"}.get(precision)
        if low and peaks["cpu_measured"].get(low):
            util[f"practical_{precision}"] = gflops_per_s / peaks["cpu_measured"][low]
            util[f"practical_{precision}_peak"] = peaks["cpu_measured"][low]
        return util
    measured, nominal_gpu = peaks.get("gpu_measured", {}), peaks.get("gpu_nominal", {})
    prec = "fp32" if precision.startswith("fp32") else "fp16"
    if measured.get(f"torch_{prec}"):
        util["practical"] = gflops_per_s / (measured[f"torch_{prec}"] * 1e3)
        util["practical_peak_gflops"] = measured[f"torch_{prec}"] * 1e3
    if nominal_gpu.get(f"{prec}_tflops"):
        util["nominal"] = gflops_per_s / (nominal_gpu[f"{prec}_tflops"] * 1e3)
        util["nominal_peak_gflops"] = nominal_gpu[f"{prec}_tflops"] * 1e3
    return util


def flow_flops(prep: "Prepared") -> tp.Dict[str, tp.Dict[str, int]]:
    from .flops import flow_step_flops

    jasco, out = prep.reference, {}
    for b, bi in prep.workload.batches.items():
        f = flow_step_flops(jasco.cfg.transformer, bi.rows, jasco.n_frames, bi.text_len)
        out[f"flow_step/b{b}"] = {"rows": bi.rows, "frames": jasco.n_frames, "text_len": bi.text_len, **f}
    return out


def quality(m: "Measurements", plan: "Plan") -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """Latents of each solve against the reference's: rel-L2 and max abs (same noise and conditions)."""
    ref = m.quality_reference
    out: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    for name, solve in m.solves.items():
        q = {"reference": ref, "solver": plan.solver, "steps": plan.steps, "nfe": solve["nfe"], "batch": solve["batch"],
             "seconds": solve["seconds"]}
        if name == ref:
            q["role"] = "reference"
        else:
            q["latents_rel_l2"] = rel_l2(solve["latents"], m.solves[ref]["latents"])
            q["latents_max_abs"] = max_abs(solve["latents"], m.solves[ref]["latents"])
        out[name] = q
    return out


def component(name: str, v: tp.Any, key: str, plan: "Plan", prep: "Prepared", m: "Measurements",
              flops: tp.Dict[str, tp.Dict[str, int]], nfe: tp.Optional[int]) -> tp.Optional[tp.Dict[str, tp.Any]]:
    s = m.timings.summary(name, key)
    if s is None:
        if key in m.failures.get(name, {}):
            return {"failed": m.failures[name][key]}
        if key.startswith("end_to_end") and v.e2e_skip:
            return {"skipped": v.e2e_skip}
        return None
    ref = next(((b, key) for b in BASELINES if (b, key) in m.outputs), None)
    if (name, key) in m.outputs and ref is not None and ref[0] != name:
        s["output_rel_l2"] = rel_l2(m.outputs[(name, key)], m.outputs[ref])
        s["output_reference"] = ref[0]
    s["speedup"] = speedups(m.timings, name, key, s["median"])
    audio_s = batch_of(key) * prep.workload.duration
    if key.startswith("flow_step/"):
        s["flops"] = flops[key]["total"]
        s["gflops_per_s"] = s["flops"] / s["median"] / 1e9
        s["utilisation"] = utilisation(s["gflops_per_s"], v.device, v.precision, prep.peaks)
        if nfe:
            s["rtf_flow"] = nfe * s["median"] / audio_s
            s["rtf_flow_nfe"] = nfe
    if key.startswith("end_to_end/"):
        s["rtf"] = s["median"] / audio_s
        run = m.e2e.get((name, key), {})
        s["nfe"] = run.get("nfe")
        s["stages_median"] = {k: float(np.median(x)) for k, x in run.get("stages", {}).items()}
        s["traffic_per_nfe"] = run.get("traffic")  # flow-step host↔device bytes and allocations per evaluation
    return s


def assess(plan: "Plan", prep: "Prepared", m: "Measurements") -> tp.Dict[str, tp.Any]:
    """``{"flops": ..., "variants": {name: {...}}}``: every derived number, per variant."""
    flops = flow_flops(prep)
    fixed_nfe = prep.workload.nfe()
    q = quality(m, plan)
    variants: tp.Dict[str, tp.Any] = {}
    for name, v in prep.variants.items():
        nfe = fixed_nfe or q.get(name, {}).get("nfe")
        comps = {}
        for key in m.keys:
            c = component(name, v, key, plan, prep, m, flops, nfe)
            if c is not None:
                comps[key] = c
        iso = m.isolated.get(name) or {}
        shared = m.rss_peak.get(name, 0) / 2 ** 20
        memory = {**prep.variant_setup[name], "shared_process_rss_peak_mb": shared,
                  "gpu_used_peak_mb": m.gpu_peak[name] / 2 ** 20 if name in m.gpu_peak else None,
                  "isolated": m.isolated.get(name), "rss_peak_mb": iso.get("peak_rss_mb", shared)}
        if m.torch_cuda_max_allocated is not None and v.device == "cuda" and v.backend.startswith("torch"):
            memory["torch_cuda_max_allocated_mb_all_torch_variants"] = m.torch_cuda_max_allocated / 2 ** 20
        variants[name] = {"label": v.label, "backend": v.backend, "precision": v.precision, "device": v.device,
                          "notes": v.notes, "components": comps, "artifacts": v.artifacts, "quality": q.get(name),
                          "memory": memory}
    return {"flops": flops, "variants": variants}


def targets(variants: tp.Dict[str, tp.Any], solver: str, steps: int) -> tp.List[tp.Dict[str, tp.Any]]:
    """The project's benchmark targets, evaluated where this run measured what they need."""
    out: tp.List[tp.Dict[str, tp.Any]] = []
    key = next((k for k in sorted({k for x in variants.values() for k in x["components"]})
                if k.startswith("flow_step/")), None)
    if key is None:
        return out

    def speed(name: str) -> tp.Optional[float]:
        return variants.get(name, {}).get("components", {}).get(key, {}).get("speedup", {}).get(CPU_BASELINE)

    for name in ("ort-cpu:fp32", "ort-cpu:fp32-fused"):
        s = speed(name)
        if s is not None:
            out.append({"goal": f"{name} flow step ≥ {FP32_TARGET}× torch eager fp32 ({key})", "value": f"{s:.2f}×",
                        "met": s >= FP32_TARGET, "note": TARGETS_NOTE})
    least, worst = REDUCED_TARGET
    for name in ("ort-cpu:int8", "torch:bf16"):
        s = speed(name)
        if s is None:
            continue
        q = (variants[name].get("quality") or {}).get("latents_rel_l2")
        out.append({"goal": f"{name} flow step ≥ {least}× torch eager fp32 with {solver}-{steps} latents rel-L2 ≤ {worst:g}",
                    "value": f"{s:.2f}×, rel-L2 {'n/a' if q is None else f'{q:.2e}'}",
                    "met": s >= least and q is not None and q <= worst, "note": TARGETS_NOTE})
    return out
