"""``python -m benchmarks.run``: PyTorch vs ONNX Runtime vs TensorRT, per component and end to end.

Examples::

    # the cited CPU run: 400M flow step, torch fp32 vs ONNX Runtime fp32 vs int8 (≈ 10 min cold, 2 cores)
    python -m benchmarks.run --model 400m-random --components flow_step --backends torch,ort-cpu \\
        --precision fp32,int8 --batch 1 --cfg demo --repeats 5 --out benchmarks/results/400m-flow-cpu
    # everything on the tiny model (seconds)
    python -m benchmarks.run --model tiny --precision fp32,int8 --batch 1,2
    # CI smoke: checks the harness and its output format, not the numbers
    python -m benchmarks.run --smoke --out /tmp/bench-smoke

Measurements are interleaved (repeat r of every variant before repeat r+1), so slow drifts of a
shared machine hit all variants alike; speed-ups compare medians from the same run. Writes
``results.json``, ``results.md`` (also printed) and ``latency.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import os
import platform
import shlex
import sys
import time
import typing as tp
from pathlib import Path

from .models import DEFAULT_CACHE, resolve_model

logger = logging.getLogger("benchmarks")
SCHEMA = "jasco-trt-bench/1"
TARGETS_NOTE = "targets are stated for --model 400m-random, batch 1, demo cfg, on the 2-core AVX-512 CPU"


def _csv(s: str) -> tp.List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | 400m-random | 1b-random | hub id | checkpoint folder")
    p.add_argument("--backends", default="auto",
                   help="comma list of torch, torch-cuda, torch-compile, ort-cpu, ort-cuda, trt; "
                        "auto = torch,ort-cpu plus torch-cuda,ort-cuda,trt where available")
    p.add_argument("--precision", default="fp32",
                   help="comma list of fp32, fp32-fused, fp16, bf16, int8 (per backend where supported; "
                        "fp32-fused = ONNX fp32 flow step with fused attention)")
    p.add_argument("--batch", default="1", help="comma list of prompt batch sizes (CFG rows = batch × terms)")
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint", "heun", "dopri5"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", default="demo", choices=["demo", "all-only"])
    p.add_argument("--components", default="all",
                   help="comma list of text_encoder, drums_encoder, flow_step, decoder, end_to_end (all)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median, p10, p90)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per measurement first")
    p.add_argument("--e2e-repeats", type=int, default=None, help="timed generations (default: --repeats)")
    p.add_argument("--quality", default="reduced", choices=["none", "reduced", "all"],
                   help="latents rel-L2 after the solve vs the fp32 reference, for reduced-precision variants "
                        "(default), every variant, or none")
    p.add_argument("--memory", default="isolated", choices=["isolated", "shared", "none"],
                   help="peak RSS per variant from a process of its own (isolated, default), or only the "
                        "shared timing process's RSS")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime (physical cores)")
    p.add_argument("--no-baseline", action="store_true", help="do not add the PyTorch baselines automatically")
    p.add_argument("--parity", action="store_true", help="run the exporter's parity gate when exporting")
    p.add_argument("--fresh", action="store_true", help="re-export even if a cached export exists")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="random models and exports (default benchmarks/.cache)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<model>-<time>)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, 1 repeat, 2 steps, all components, fp32, fp32-fused, int8: checks the harness, not the numbers")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.repeats, args.warmup, args.e2e_repeats, args.steps = "tiny", 1, 1, 1, 2
        if args.precision == "fp32":
            args.precision = "fp32,fp32-fused,int8"
    return args


# -- planning -------------------------------------------------------------------------------------------
def plan_variants(args: argparse.Namespace) -> tp.Tuple[tp.List[tp.Tuple[str, str]], tp.Dict[str, str]]:
    from .variants import BACKENDS, CPU_BASELINE, GPU_BACKENDS, GPU_BASELINE, unsupported_reason

    precisions = _csv(args.precision)
    if args.backends == "auto":
        backends = ["torch", "ort-cpu"] + [b for b in GPU_BACKENDS if unsupported_reason(b, "fp16") is None]
    else:
        backends = _csv(args.backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    wanted = [(b, p) for b in backends for p in precisions]
    if not args.no_baseline:
        on_gpu = any(b in GPU_BACKENDS or (b == "torch-compile" and unsupported_reason("torch-cuda", "fp32") is None)
                     for b, _ in wanted)
        on_cpu = any(b not in GPU_BACKENDS for b, _ in wanted)
        for flag, base in ((on_cpu, CPU_BASELINE), (on_gpu, GPU_BASELINE)):
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


def _machine(threads: int) -> tp.Dict[str, tp.Any]:
    from .flops import cpu_info

    m: tp.Dict[str, tp.Any] = {"cpu": cpu_info(), "threads": threads, "platform": platform.platform(),
                               "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt", "transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    m["versions"] = versions
    from .variants import cuda_available

    if cuda_available():
        import torch

        m["gpu"] = torch.cuda.get_device_name(0)
    return m


# -- measurement ---------------------------------------------------------------------------------------
def _rel_l2(a, b) -> float:
    import numpy as np

    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("nan")
    den = float(np.linalg.norm(b64.ravel()))
    return float(np.linalg.norm((a64 - b64).ravel()) / den) if den > 0 else float(np.linalg.norm(a64.ravel()))


def run(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    t_start = time.perf_counter()
    model = resolve_model(args.model, args.cache)  # before any huggingface_hub import
    t_model = time.perf_counter() - t_start
    import numpy as np
    import torch

    from .flops import flow_step_flops, measure_cpu_gemm, measure_gpu_gemm, nominal_cpu_peak, nominal_gpu_peak
    from .measure import MemoryProbe, Timings, time_call
    from .variants import COMPONENTS, CPU_BASELINE, GPU_BASELINE, runtime_variant, torch_variant
    from .workload import CFG, build_workload

    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:  # pragma: no cover
        physical = os.cpu_count() or 1
    threads = int(args.threads or physical)
    torch.set_num_threads(threads)
    components = list(COMPONENTS) if args.components == "all" else _csv(args.components)
    bad = [c for c in components if c not in COMPONENTS]
    if bad:
        raise SystemExit(f"unknown component(s) {bad}; choose from {', '.join(COMPONENTS)}")
    batches = [int(b) for b in _csv(args.batch)]
    planned, skipped = plan_variants(args)
    probe = MemoryProbe()
    machine = _machine(threads)
    logger.info("variants: %s", ", ".join(f"{b}:{p}" for b, p in planned))

    # -- model, exports, inputs -----------------------------------------------------------------------
    from jasco_export import get_pretrained

    t0 = time.perf_counter()
    jasco = get_pretrained(model.load_id)
    setup: tp.Dict[str, float] = {"model_cache": t_model, "load_reference": time.perf_counter() - t0}
    needs_graphs = {"text_encoder": "text_encoder", "drums_encoder": "drums_encoder", "flow_step": "flow_step",
                    "decoder": "encodec_decoder"}
    graphs = sorted({needs_graphs[c] for c in components if c in needs_graphs}
                    | ({"text_encoder", "flow_step", "encodec_decoder", "drums_encoder"} if "end_to_end" in components else set()))
    if "drums_encoder" in graphs and "self_wav" not in jasco.model.condition_provider.conditioners:
        graphs.remove("drums_encoder")
        components = [c for c in components if c != "drums_encoder"]
    export_dirs: tp.Dict[str, Path] = {}
    ort_precisions = sorted({p for b, p in planned if b.startswith("ort-")})
    if ort_precisions:
        from .models import ensure_export

        t0 = time.perf_counter()
        export_dirs["onnx"] = ensure_export(model, graphs, ort_precisions, args.cache, fresh=args.fresh, parity=args.parity)
        setup["export_onnx"] = time.perf_counter() - t0
        if "fp32-fused" in ort_precisions:
            from .cpu_variants import ensure_fused

            t0 = time.perf_counter()
            ensure_fused(export_dirs["onnx"])
            setup["fuse_attention"] = time.perf_counter() - t0
        if "int8" in ort_precisions:
            from .cpu_variants import ensure_int8

            t0 = time.perf_counter()
            ensure_int8(export_dirs["onnx"])
            setup["quantize_int8"] = time.perf_counter() - t0
    if any(b == "trt" for b, _ in planned):
        from .models import ensure_export

        t0 = time.perf_counter()
        export_dirs["trt"] = ensure_export(model, graphs, ["fp16"], args.cache, backend="trt", fresh=args.fresh,
                                           parity=args.parity)
        setup["export_trt"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wl = build_workload(jasco, batches, args.cfg, args.solver, args.steps)
    setup["inputs"] = time.perf_counter() - t0
    tc = jasco.cfg.transformer

    # -- device peaks ---------------------------------------------------------------------------------
    peaks: tp.Dict[str, tp.Any] = {"cpu_nominal": nominal_cpu_peak(machine["cpu"])}
    t0 = time.perf_counter()
    peaks["cpu_measured"] = measure_cpu_gemm(threads, size=(256, 256, 256) if args.smoke else (1536, 1024, 4096),
                                             repeats=2 if args.smoke else 5)
    if machine.get("gpu"):
        peaks["gpu_nominal"] = nominal_gpu_peak(machine["gpu"])
        peaks["gpu_measured"] = measure_gpu_gemm(size=1024 if args.smoke else 8192)
    setup["peaks"] = time.perf_counter() - t0

    # -- variants ------------------------------------------------------------------------------------
    variants = {}
    mem: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    for b, p in planned:
        name = f"{b}:{p}"
        gc.collect()
        before = probe.rss()
        t0 = time.perf_counter()
        try:
            with probe.track(name):
                if b.startswith("torch"):
                    v = torch_variant(b, p, jasco, wl, components)
                else:
                    v = runtime_variant(b, p, export_dirs["trt" if b == "trt" else "onnx"], wl, components, threads)
        except Exception as exc:  # one broken backend must not lose the others' numbers
            logger.exception("variant %s failed to set up", name)
            skipped[name] = f"setup failed: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        variants[name] = v
        mem[name] = {"rss_before_mb": before / 2 ** 20, "setup_seconds": time.perf_counter() - t0}
    if not variants:
        raise SystemExit("no variant could be set up: " + json.dumps(skipped, indent=1))

    timings = Timings()
    outputs: tp.Dict[tp.Tuple[str, str], tp.Any] = {}
    keys = [k for k, _ in wl.component_inputs(components)]
    failures: tp.Dict[str, tp.Dict[str, str]] = {}

    def failed(name: str, key: str, exc: BaseException) -> None:
        logger.error("%s failed on %s: %s: %s", name, key, type(exc).__name__, exc)
        failures.setdefault(name, {})[key] = f"{type(exc).__name__}: {str(exc)[:300]}"

    from .variants import to_numpy

    for key in keys:
        logger.info("measuring %s", key)
        active = {}
        for name, v in variants.items():  # warm-up, and the outputs for the cross-backend check
            try:
                with probe.track(name):
                    for i in range(max(1, args.warmup)):
                        out = v.call[key]()
                        if i == 0:
                            outputs[(name, key)] = to_numpy(out)
                active[name] = v
            except Exception as exc:  # e.g. torch.compile without a compiler: keep the other variants
                failed(name, key, exc)
        for _ in range(args.repeats):
            for name, v in active.items():
                with probe.track(name):
                    timings.add(name, key, time_call(v.call[key], v.cuda_events))
    e2e_runs: tp.Dict[tp.Tuple[str, str], tp.Dict[str, tp.Any]] = {}
    if "end_to_end" in components:
        reps = args.e2e_repeats if args.e2e_repeats is not None else args.repeats
        for b in batches:
            key = f"end_to_end/b{b}"
            logger.info("measuring %s", key)
            active = {}
            for name, v in variants.items():
                if key not in v.e2e:
                    continue
                try:
                    with probe.track(name):
                        lat, _, nfe = v.e2e[key]()  # warm-up
                except Exception as exc:
                    failed(name, key, exc)
                    continue
                active[name] = v
                outputs[(name, key)] = lat
                e2e_runs[(name, key)] = {"nfe": nfe, "stages": {}}
            for _ in range(reps):
                for name, v in active.items():
                    with probe.track(name):
                        t0, c0 = time.perf_counter(), time.process_time()
                        _, stages, _ = v.e2e[key]()
                        wall = time.perf_counter() - t0
                    from .measure import Sample

                    timings.add(name, key, Sample(wall, (time.process_time() - c0) / wall if v.device == "cpu" else None))
                    for s, sec in stages.items():
                        e2e_runs[(name, key)]["stages"].setdefault(s, []).append(sec)

    # -- latent quality ------------------------------------------------------------------------------
    quality: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    if args.quality != "none" and "flow_step" in components:
        from jasco_runtime.guidance import combine_vector_fields
        from jasco_runtime.solvers import SOLVERS

        b0 = batches[0]
        cands = [n for n in ("ort-cpu:fp32", CPU_BASELINE, "ort-cuda:fp32", "torch-cuda:fp32") if n in variants]
        ref_name = cands[0] if cands else None
        todo = [n for n, v in variants.items() if v.flow is not None and n != ref_name
                and (args.quality == "all" or not v.precision.startswith("fp32"))]
        if ref_name and todo:
            lat: tp.Dict[str, tp.Any] = {}
            for name in [ref_name] + todo:
                v = variants[name]
                logger.info("latent quality: %s %d-step solve with %s", args.solver, args.steps, name)

                def field(t: float, z: np.ndarray, v=v) -> np.ndarray:
                    return combine_vector_fields(v.flow(wl.flow_inputs(b0, t, z)), wl.terms)

                t0 = time.perf_counter()
                with probe.track(name):
                    solver = SOLVERS[args.solver]
                    res = solver(field, wl.batches[b0].noise) if args.solver == "dopri5" else solver(field, wl.batches[b0].noise, args.steps)
                lat[name] = res.z
                quality[name] = {"reference": ref_name, "solver": args.solver, "steps": args.steps, "nfe": int(res.nfe),
                                 "batch": b0, "seconds": time.perf_counter() - t0}
            for name in todo:
                quality[name]["latents_rel_l2"] = _rel_l2(lat[name], lat[ref_name])
                quality[name]["latents_max_abs"] = float(np.max(np.abs(lat[name] - lat[ref_name])))
            quality[ref_name]["role"] = "reference"

    # -- memory, one process per variant ------------------------------------------------------------
    isolated: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    measured = [c for c in components if c != "end_to_end"]
    if args.memory == "isolated" and measured:
        import tempfile

        from .memory import isolated_memory, save_inputs

        with tempfile.TemporaryDirectory(prefix="jasco-bench-") as tmp:
            npz = save_inputs(wl, measured, Path(tmp) / "inputs.npz")
            for name, v in variants.items():
                logger.info("peak memory of %s in its own process", name)
                isolated[name] = isolated_memory({
                    "backend": v.backend, "precision": v.precision, "load_id": model.load_id,
                    "export_dir": str(export_dirs.get("trt" if v.backend == "trt" else "onnx", "")),
                    "components": measured, "inputs": str(npz), "solver": args.solver, "steps": args.steps,
                    "threads": threads})

    # -- results -------------------------------------------------------------------------------------
    nfe_fixed = wl.nfe()
    flops = {}
    for b, bi in wl.batches.items():
        f = flow_step_flops(tc, bi.rows, jasco.n_frames, bi.text_len)
        flops[f"flow_step/b{b}"] = {"rows": bi.rows, "frames": jasco.n_frames, "text_len": bi.text_len, **f}
    cpu_peak = peaks["cpu_measured"]["practical_fp32_gflops"]
    res_variants: tp.Dict[str, tp.Any] = {}
    all_keys = keys + [f"end_to_end/b{b}" for b in batches if "end_to_end" in components]
    for name, v in variants.items():
        comps: tp.Dict[str, tp.Any] = {}
        for key in all_keys:
            s = timings.summary(name, key)
            if s is None:
                if key in failures.get(name, {}):
                    comps[key] = {"failed": failures[name][key]}
                elif key.startswith("end_to_end") and v.e2e_skip:
                    comps[key] = {"skipped": v.e2e_skip}
                continue
            ref_key = (CPU_BASELINE if (CPU_BASELINE, key) in outputs else GPU_BASELINE, key)
            if (name, key) in outputs and ref_key in outputs and ref_key[0] != name:
                s["output_rel_l2"] = _rel_l2(outputs[(name, key)], outputs[ref_key])
                s["output_reference"] = ref_key[0]
            speed = {}
            for base in (CPU_BASELINE, GPU_BASELINE):
                bs = timings.summary(base, key)
                if bs and base != name and s["median"]:
                    speed[base] = bs["median"] / s["median"]
            s["speedup"] = speed
            batch = int(key.split("/b")[1]) if "/b" in key else 1
            audio_s = batch * wl.duration
            if key.startswith("flow_step/"):
                fl = flops[key]["total"]
                s["flops"] = fl
                s["gflops_per_s"] = fl / s["median"] / 1e9
                util: tp.Dict[str, tp.Any] = {}
                if v.device == "cpu":
                    util["practical"] = s["gflops_per_s"] / cpu_peak
                    util["practical_peak_gflops"] = cpu_peak
                    nom = peaks["cpu_nominal"].get("fp32_gflops")
                    util["nominal"] = s["gflops_per_s"] / nom if nom else None
                    util["nominal_peak_gflops"] = nom
                    # reduced precision: against the measured GEMM rate of that precision as well
                    low = {"int8": "practical_int8_gops", "bf16": "practical_bf16_gflops"}.get(v.precision)
                    if low and peaks["cpu_measured"].get(low):
                        util[f"practical_{v.precision}"] = s["gflops_per_s"] / peaks["cpu_measured"][low]
                        util[f"practical_{v.precision}_peak"] = peaks["cpu_measured"][low]
                else:
                    gm, gn = peaks.get("gpu_measured", {}), peaks.get("gpu_nominal", {})
                    prec = "fp32" if v.precision == "fp32" else "fp16"
                    if gm.get(f"torch_{prec}"):
                        util["practical"] = s["gflops_per_s"] / (gm[f"torch_{prec}"] * 1e3)
                        util["practical_peak_gflops"] = gm[f"torch_{prec}"] * 1e3
                    if gn.get(f"{prec}_tflops"):
                        util["nominal"] = s["gflops_per_s"] / (gn[f"{prec}_tflops"] * 1e3)
                        util["nominal_peak_gflops"] = gn[f"{prec}_tflops"] * 1e3
                s["utilisation"] = util
                nfe = nfe_fixed or (quality.get(name, {}).get("nfe"))
                if nfe:
                    s["rtf_flow"] = nfe * s["median"] / audio_s
                    s["rtf_flow_nfe"] = nfe
            if key.startswith("end_to_end/"):
                s["rtf"] = s["median"] / audio_s
                run_info = e2e_runs.get((name, key), {})
                s["nfe"] = run_info.get("nfe")
                s["stages_median"] = {k: float(np.median(x)) for k, x in run_info.get("stages", {}).items()}
            comps[key] = s
        res_variants[name] = {
            "label": v.label, "backend": v.backend, "precision": v.precision, "device": v.device, "notes": v.notes,
            "components": comps, "artifacts": v.artifacts, "quality": quality.get(name),
            "memory": {**mem[name], "shared_process_rss_peak_mb": probe.rss_peak.get(name, 0) / 2 ** 20,
                       "gpu_used_peak_mb": (probe.gpu_peak[name] / 2 ** 20) if name in probe.gpu_peak else None,
                       "isolated": isolated.get(name),
                       "rss_peak_mb": (isolated.get(name) or {}).get("peak_rss_mb",
                                                                    probe.rss_peak.get(name, 0) / 2 ** 20)},
        }
        if v.device == "cuda" and v.backend.startswith("torch"):  # torch's allocator only, all torch CUDA variants
            res_variants[name]["memory"]["torch_cuda_max_allocated_mb_all_torch_variants"] = \
                torch.cuda.max_memory_allocated() / 2 ** 20
    machine["loadavg_end"] = list(os.getloadavg())
    probe.close()
    results = {
        "schema": SCHEMA,
        "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (getattr(args, "_argv", None) or [])),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "config": {"model": args.model, "load_id": model.load_id, "preset": model.preset, "batches": batches,
                   "cfg": args.cfg, "cfg_coefs": list(CFG[args.cfg]), "cfg_terms": len(wl.terms),
                   "terms": [f"{t.kind}={t.weight:g}" for t in wl.terms], "solver": args.solver, "steps": args.steps,
                   "nfe_per_generation": nfe_fixed, "repeats": args.repeats, "warmup": max(1, args.warmup),
                   "components": components, "threads": threads, "interleaved": True,
                   "dims": {"dim": tc.dim, "layers": tc.num_layers, "heads": tc.num_heads, "ffn": tc.dim_feedforward,
                            "frames": jasco.n_frames, "audio_seconds": wl.duration},
                   "rtf_definition": "wall seconds / seconds of audio produced (batch × duration); < 1 is faster "
                                     "than real time; rtf_flow counts only the solver's flow-step evaluations"},
        "peaks": peaks,
        "flops": flops,
        "flops_convention": "2 FLOPs per multiply-accumulate of every matrix product; element-wise ops excluded",
        "variants": res_variants,
        "skipped": skipped,
        "setup_seconds": setup,
        "memory_note": "rss_peak_mb: peak RSS (VmHWM) of a process that builds only this variant and runs "
                       "each measured component once (--memory isolated; runtime variants never import torch); "
                       "shared_process_rss_peak_mb: RSS of the timing process, which holds every variant and the "
                       "PyTorch reference",
        "wall_seconds": time.perf_counter() - t_start,
    }
    results["targets"] = targets(results)
    return results


def targets(results: tp.Dict[str, tp.Any]) -> tp.List[tp.Dict[str, tp.Any]]:
    """The issue's benchmark targets, evaluated where this run measured what they need."""
    out = []
    v = results["variants"]
    key = next((k for k in sorted({k for x in v.values() for k in x["components"]}) if k.startswith("flow_step/")), None)
    if key is None:
        return out

    def speed(name: str) -> tp.Optional[float]:
        return v.get(name, {}).get("components", {}).get(key, {}).get("speedup", {}).get("torch:fp32")

    for name in ("ort-cpu:fp32", "ort-cpu:fp32-fused"):
        s = speed(name)
        if s is not None:
            out.append({"goal": f"{name} flow step ≥ 2.2× torch eager fp32 ({key})", "value": f"{s:.2f}×",
                        "met": s >= 2.2, "note": TARGETS_NOTE})
    for name in ("ort-cpu:int8", "torch:bf16"):
        s = speed(name)
        if s is None:
            continue
        q = (v[name].get("quality") or {}).get("latents_rel_l2")
        ok = s >= 3.5 and q is not None and q <= 2e-2
        out.append({"goal": f"{name} flow step ≥ 3.5× torch eager fp32 with {results['config']['solver']}-"
                            f"{results['config']['steps']} latents rel-L2 ≤ 2e-2",
                    "value": f"{s:.2f}×, rel-L2 {'n/a' if q is None else f'{q:.2e}'}", "met": ok, "note": TARGETS_NOTE})
    return out


def write(results: tp.Dict[str, tp.Any], out: Path) -> tp.Dict[str, Path]:
    from . import report

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "latency.png"}
    paths["json"].write_text(json.dumps(results, indent=2, default=float))
    m = results["machine"]
    header = (f"# JASCO benchmark — {results['config']['model']}\n\n"
              f"- date: {results['date']}\n- machine: {m['cpu'].get('model_name')} ({m['cpu'].get('physical_cores')} cores, "
              f"{m['threads']} threads){' + ' + m['gpu'] if m.get('gpu') else ''}; load average at start "
              f"{m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}\n"
              f"- command: `{results['command']}`\n\n")
    paths["markdown"].write_text(header + report.markdown(results))
    report.plot(results, paths["plot"])
    return paths


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args._argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[bench] %(message)s")
    for noisy in ("jasco_export", "onnxruntime", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out or Path(__file__).resolve().parent / "results" / f"{args.model.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run(args)
    paths = write(results, out)
    print(paths["markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
