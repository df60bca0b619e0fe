"""Step 2 of a benchmark run: everything the measurements need, built once.

The PyTorch reference, the export folders (through :mod:`.models`; the benchmark-only fused flow step
added through the folder's :class:`~jasco_runtime.export_folder.ExportFolder`), the shared inputs, the
machine description and device peaks, and one :class:`~.variants.Variant` per planned backend × precision.
"""
from __future__ import annotations

import gc
import logging
import os
import platform
import time
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from .models import ModelRef, ensure_export, resolve_model
from .plan import Plan

logger = logging.getLogger("benchmarks")


@dataclass
class Prepared:
    model: ModelRef
    reference: tp.Any  # the loaded PyTorch JASCO
    components: tp.List[str]  # the plan's, less drums_encoder for a model without drums
    export_dirs: tp.Dict[str, Path]  # "onnx" / "trt" → export folder
    workload: tp.Any
    machine: tp.Dict[str, tp.Any]
    peaks: tp.Dict[str, tp.Any]
    variants: tp.Dict[str, tp.Any] = field(default_factory=dict)
    skipped: tp.Dict[str, str] = field(default_factory=dict)  # the plan's, plus variants that failed to set up
    setup_seconds: tp.Dict[str, float] = field(default_factory=dict)
    variant_setup: tp.Dict[str, tp.Dict[str, float]] = field(default_factory=dict)  # rss before, seconds


def describe_machine(threads: int) -> tp.Dict[str, tp.Any]:
    import importlib.metadata as md

    from .flops import cpu_info
    from .variants import cuda_available

    m: tp.Dict[str, tp.Any] = {"cpu": cpu_info(), "threads": threads, "platform": platform.platform(),
                               "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}
    versions = {}
    for pkg in ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt", "transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    m["versions"] = versions
    if cuda_available():
        import torch

        m["gpu"] = torch.cuda.get_device_name(0)
    return m


def device_peaks(machine: tp.Dict[str, tp.Any], threads: int, smoke: bool) -> tp.Dict[str, tp.Any]:
    from .flops import measure_cpu_gemm, measure_gpu_gemm, nominal_cpu_peak, nominal_gpu_peak

    peaks: tp.Dict[str, tp.Any] = {"cpu_nominal": nominal_cpu_peak(machine["cpu"])}
    peaks["cpu_measured"] = measure_cpu_gemm(threads, size=(256, 256, 256) if smoke else (1536, 1024, 4096),
                                             repeats=2 if smoke else 5)
    if machine.get("gpu"):
        peaks["gpu_nominal"] = nominal_gpu_peak(machine["gpu"])
        peaks["gpu_measured"] = measure_gpu_gemm(size=1024 if smoke else 8192)
    return peaks


def _exports(plan: Plan, model: ModelRef, graphs: tp.List[str], setup: tp.Dict[str, float]) -> tp.Dict[str, Path]:
    dirs: tp.Dict[str, Path] = {}
    precisions = plan.onnx_precisions()
    if precisions:
        t0 = time.perf_counter()
        wanted = sorted({"fp32" if p == "fp32-fused" else p for p in precisions})
        dirs["onnx"] = ensure_export(model, graphs, wanted, plan.cache, fresh=plan.fresh, parity=plan.parity)
        setup["export_onnx"] = time.perf_counter() - t0
        if "fp32-fused" in precisions:
            from .cpu_variants import ensure_fused

            t0 = time.perf_counter()
            ensure_fused(dirs["onnx"])
            setup["fuse_attention"] = time.perf_counter() - t0
    if plan.uses_trt:
        t0 = time.perf_counter()
        dirs["trt"] = ensure_export(model, graphs, ["fp16"], plan.cache, backend="trt", fresh=plan.fresh,
                                    parity=plan.parity)
        setup["export_trt"] = time.perf_counter() - t0
    return dirs


def build_variants(plan: Plan, prep: Prepared, probe: tp.Any) -> None:
    """One variant per planned backend × precision; one that fails to set up is skipped with its reason."""
    from jasco_export.graphs.onnx_export import file_size

    from .variants import runtime_variant, torch_variant

    for b, p in plan.variants:
        name = f"{b}:{p}"
        gc.collect()
        before = probe.rss()
        t0 = time.perf_counter()
        try:
            with probe.track(name):
                if b.startswith("torch"):
                    v = torch_variant(b, p, prep.reference, prep.workload, prep.components)
                else:
                    folder = prep.export_dirs["trt" if b == "trt" else "onnx"]
                    v = runtime_variant(b, p, folder, prep.workload, prep.components, plan.threads)
                    for art in v.artifacts.values():  # here, not in the variant: the runtime side stays torch-free
                        art["bytes"] = file_size(folder / art["file"])
        except Exception as exc:  # one broken backend must not lose the others' numbers
            logger.exception("variant %s failed to set up", name)
            prep.skipped[name] = f"setup failed: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        prep.variants[name] = v
        prep.variant_setup[name] = {"rss_before_mb": before / 2 ** 20, "setup_seconds": time.perf_counter() - t0}


def prepare(plan: Plan, probe: tp.Any) -> Prepared:
    t_start = time.perf_counter()
    model = resolve_model(plan.model, plan.cache)  # before any huggingface_hub import
    setup = {"model_cache": time.perf_counter() - t_start}
    import torch

    from jasco_export import get_pretrained

    from .workload import build_workload

    torch.set_num_threads(plan.threads)
    machine = describe_machine(plan.threads)
    logger.info("variants: %s", ", ".join(plan.names))
    t0 = time.perf_counter()
    jasco = get_pretrained(model.load_id)
    setup["load_reference"] = time.perf_counter() - t0
    has_drums = "self_wav" in jasco.model.condition_provider.conditioners
    components = [c for c in plan.components if c != "drums_encoder" or has_drums]
    export_dirs = _exports(plan, model, plan.graphs(has_drums), setup)
    t0 = time.perf_counter()
    workload = build_workload(jasco, list(plan.batches), plan.cfg, plan.solver, plan.steps)
    setup["inputs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    peaks = device_peaks(machine, plan.threads, plan.smoke)
    setup["peaks"] = time.perf_counter() - t0
    prep = Prepared(model, jasco, components, export_dirs, workload, machine, peaks, skipped=dict(plan.skipped),
                    setup_seconds=setup)
    build_variants(plan, prep, probe)
    if not prep.variants:
        raise RuntimeError("no variant could be set up: " + "; ".join(f"{k}: {v}" for k, v in prep.skipped.items()))
    return prep
