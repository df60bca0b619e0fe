"""One command that proves the GPU path on the first machine that has a GPU, offline, within a time budget.

    PYTHONPATH=runtime:export:. python -m benchmarks.gpu_check --out DIR [--work DIR] [--budget-s 540]
        [--engines TINY_EXPORT] [--flow-preset 400m|tiny|none] [--runs 20]

Runs from a plain checkout (no install; omegaconf is not needed).  Phases, cheapest first; a failed check
ends its phase (later checks of that phase depend on it), the next phases still run; exit 1 if any check
failed.  A check whose library is not installed here is a SKIP with a one-line reason (onnxruntime-gpu,
TensorRT, torch with CUDA); ``--budget-s`` is checked before each phase, and a phase that cannot finish in
what is left is a SKIP saying so.

1. versions and pre-flight imports (what is installed, what each check needs);
2. the tiny export (or ``--engines``): on ONNX Runtime CPU end to end, an explicit ``cuda`` provider refused
   without CUDA, the TensorRT compatibility record clean.  On a CPU-only machine: one line, exit 0;
3. PyTorch eager timings first (the baseline users have today): the flow step (3 CFG rows) of the tiny model
   and of ``--flow-preset`` (the real 400M architecture, random weights, built in memory: no export), fp32
   (TF32 off) and fp16 autocast;
4. ONNX Runtime CUDA: the provider really started; each graph on CUDA (fp16; fp32-only graphs fp32 with TF32
   off) against the fp32 CPU reference, at the batch axis' min and max and every other axis at its
   profile's opt; the pipeline (2 prompts, Euler 10) against the CPU; no device-memory growth over 20
   generations (warmed up with every shape the loop uses); the tiny end-to-end and flow-step timings;
5. TensorRT: the tiny engines build, the timing cache is reused, each engine at its profile's min and max
   batch against ONNX Runtime, an over-profile batch raises, a corrupted plan gives the rebuild error, the
   pipeline against ONNX Runtime CUDA, no memory growth; the tiny timings;
6. the ``--flow-preset`` flow step exported (fp32 + fp16 ONNX) and timed on ONNX Runtime CUDA and TensorRT.

Timings follow :data:`benchmarks.variants.TIMING_RULES` (the benchmarks' rule: inputs placed on the device
before the clock, outputs copied to host inside it; chunks of the engine's max batch), medians of
``--runs`` calls after warm-up, the device synchronised by the host copy.

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (small: details are cut to one line); everything else
(hub cache, exports, engines: GBs for 400M) goes under ``--work`` (default: a temporary folder, removed at
the end).  ``../shared/GPU.md`` / ``docs/gpu.md`` say how to carry onnxruntime-gpu and polygraphy
(``python -m benchmarks.gpu_bundle``).
"""
from __future__ import annotations

import contextlib

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jasco_runtime.metrics import rel_l2

from .variants import TIMING_RULES, bind_engine, to_host

PROMPTS = ["funky groove with slap bass", "a calm piano ballad"]
DEMO = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=10, chords="C:0 F:4 G:6", progress=False)
MEMORY_GENERATIONS = 20
MEMORY_GROWTH_LIMIT = 16 << 20  # bytes over the generations (allocator rounding, not per-generation leaks)
MEMORY_SHAPES = ((2, 2), (1, 2))  # (prompts, steps) the memory loop alternates; each is warmed up first
FLOW_ROWS, FLOW_TEXT = 3, 16  # one prompt's CFG rows (cond, text-dropped, all-dropped); the profile's opt text
DETAIL_CHARS = 300
TORCH_DEVICE = "cuda"  # the dry run in the test suite sets "cpu"
# phase → seconds it needs at least (a phase is skipped when less is left of the budget)
PHASE_SECONDS = {"tiny export": 60, "cpu": 30, "torch timings": 60, "ort cuda": 60, "tensorrt": 120,
                 "flow export": 240}  # flow export: 400M make-tiny + flow-step export, minutes of CPU


class CheckFailed(Exception):
    pass


class PhaseSkipped(Exception):
    pass


def _one_line(value: tp.Any) -> tp.Any:
    if isinstance(value, dict):
        return {k: _one_line(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.4g}")
    text = str(value)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = lines[0] if lines else text
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS - 3] + "..."


@dataclass
class Report:
    out: Path
    budget_s: float = 540.0
    versions: tp.Dict[str, tp.Any] = field(default_factory=dict)
    checks: tp.List[tp.Dict[str, tp.Any]] = field(default_factory=list)
    timings: tp.Dict[str, tp.Any] = field(default_factory=dict)
    gpu: tp.Optional[str] = None  # why there is no GPU, or None
    result: str = "running"
    started: float = field(default_factory=time.monotonic)

    # -- budget ---------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self, name: str, why_not: tp.Optional[str] = None, need: tp.Optional[float] = None) -> bool:
        """Whether phase ``name`` runs: a SKIP row with the reason when its library is missing or the
        budget cannot fit it (``need``: seconds it takes at least, default :data:`PHASE_SECONDS`)."""
        need = PHASE_SECONDS.get(name, 0) if need is None else need
        left = self.budget_s - self.elapsed
        if why_not is None and left < need:
            why_not = f"time budget: {left:.0f} s left of --budget-s {self.budget_s:.0f}, this phase needs ~{need} s"
        if why_not is not None:
            self.skip(name, why_not)
            return False
        return True

    # -- rows -----------------------------------------------------------------------------------------
    def _row(self, name: str, status: str, detail: tp.Any, seconds: float) -> None:
        self.checks.append({"check": name, "status": status, "detail": _one_line(detail) if detail != "" else "",
                            "seconds": round(seconds, 2)})
        shown = self.checks[-1]["detail"]
        print(f"[gpu_check] {status} {name}{': ' + str(shown) if shown != '' else ''}", flush=True)
        self.write()

    def skip(self, name: str, reason: str) -> None:
        self._row(name, "SKIP", reason, 0.0)

    def check(self, name: str, fn: tp.Callable[[], tp.Any]) -> tp.Any:
        """Run one check; a failure (exception or False) is recorded and ends the phase (CheckFailed)."""
        t0 = time.perf_counter()
        try:
            value = fn()
            ok = value is not False
            detail = value if isinstance(value, (str, dict)) else ""
        except PhaseSkipped as exc:
            self.skip(name, str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported (traceback to stderr, one line here)
            ok, value, detail = False, None, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        self._row(name, "PASS" if ok else "FAIL", detail, time.perf_counter() - t0)
        if not ok:
            raise CheckFailed(name)
        return value

    def timing(self, name: str, fn: tp.Callable[[], tp.Any], sync: tp.Callable[[], None], runs: int, warmup: int) -> None:
        self.timings[name] = median_ms(fn, sync, runs=runs, warmup=warmup)
        print(f"[gpu_check] timing {name}: {self.timings[name]['median_ms']:.3f} ms (median of {runs})", flush=True)
        self.write()

    @property
    def failures(self) -> tp.List[str]:
        return [c["check"] for c in self.checks if c["status"] == "FAIL"]

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"schema": "jasco-trt-gpu-check/2", "result": self.result, "no_gpu": self.gpu,
                "seconds": round(self.elapsed, 1), "budget_s": self.budget_s, "versions": self.versions,
                "checks": self.checks, "timings": self.timings, "timing_rules": TIMING_RULES}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        lines = [f"# GPU check — {self.result}", "", f"GPU: {self.versions.get('gpu', 'none')}; "
                 f"{self.elapsed:.0f} s of a {self.budget_s:.0f} s budget", "", "| version | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.versions.items()]
        lines += ["", "| check | status | detail | s |", "|---|---|---|---|"]
        lines += [f"| {c['check']} | {c['status']} | "
                  f"{c['detail'] if isinstance(c['detail'], str) else json.dumps(c['detail'])} | {c['seconds']} |"
                  for c in self.checks]
        if self.timings:
            lines += ["", "| timing | median ms | p90 ms | runs |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} | {v['runs']} |" for k, v in self.timings.items()]
            lines += ["", f"Timing rules: {TIMING_RULES}"]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


# -- environment ------------------------------------------------------------------------------------------

def _importable(module: str) -> tp.Optional[str]:
    """None when ``module`` imports, else the one-line reason."""
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def preflight() -> tp.Dict[str, str]:
    """What each phase needs, importable or not (reported, never fatal)."""
    out = {}
    for module in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "soundfile", "yaml", "omegaconf",
                   "tensorrt", "polygraphy", "cuda.bindings.runtime"):
        why = _importable(module)
        out[f"import {module}"] = "ok" if why is None else why
    return out


def versions() -> tp.Dict[str, tp.Any]:
    import importlib.metadata as md

    from jasco_runtime.tensorrt.device import current_device
    from jasco_runtime.tensorrt.versions import tensorrt_versions

    out: tp.Dict[str, tp.Any] = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    try:
        import onnxruntime as ort

        out["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    except ImportError:
        pass
    try:
        import torch

        out["torch cuda"] = f"{torch.version.cuda} (available: {torch.cuda.is_available()})"
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["compute capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    except ImportError:
        pass
    out.update(tensorrt_versions())
    try:
        dev = current_device()
        out.update({"gpu": dev.name, "compute capability": dev.compute_capability, "cuda driver": dev.driver,
                    "cuda runtime (cuda-python)": dev.runtime})
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        out["cuda-python device"] = _one_line(exc)
    smi = shutil.which("nvidia-smi")
    if smi:
        import subprocess

        try:
            res = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            if res.returncode == 0 and res.stdout.strip():
                out["nvidia-smi"] = res.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired) as exc:
            out["nvidia-smi"] = _one_line(exc)
    out.update({k: v for k, v in preflight().items() if v != "ok"})
    return out


def gpu_unavailable() -> tp.Optional[str]:
    """None when a CUDA GPU is usable here (torch or cuda-python sees one), else why not."""
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    from jasco_runtime.tensorrt.device import gpu_unavailable_reason

    return gpu_unavailable_reason()


def ort_cuda_unavailable() -> tp.Optional[str]:
    """None when this onnxruntime lists the CUDA provider, else why not (a missing library: SKIP)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ("this onnxruntime has no CUDAExecutionProvider (CPU-only build); install onnxruntime-gpu "
                "(python -m benchmarks.gpu_bundle carries it)")
    return None


def torch_cuda_unavailable() -> tp.Optional[str]:
    try:
        import torch
    except ImportError as exc:
        return f"torch is not installed ({exc})"
    if TORCH_DEVICE == "cuda" and not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA device (torch.version.cuda={torch.version.cuda})"
    return None


def device_memory_used() -> int:
    """Bytes in use on device 0 (cuda-python, else torch's view of the whole device)."""
    try:
        from jasco_runtime.tensorrt.device import memory_in_use

        return memory_in_use()
    except Exception:  # noqa: BLE001 - fall back to torch
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(total - free)


def no_sync() -> None:
    """Host-side sync: every timed call already ends with its outputs copied to host (TIMING_RULES)."""


def median_ms(fn: tp.Callable[[], tp.Any], sync: tp.Callable[[], None] = no_sync, runs: int = 20,
              warmup: int = 3) -> tp.Dict[str, tp.Any]:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90)), "runs": runs}


def graph_sizes(folder, name: str, rows: int) -> tp.Dict[str, int]:
    """Every named axis of graph ``name`` at its declared profile's opt, the batch axis at ``rows``."""
    sizes = {axis: int(r.opt) for axis, r in folder.graphs[name].profile.items()}
    sizes["batch"] = rows
    return sizes


def graph_inputs(folder, name: str, rows: int, seed: int = 0,
                 sizes: tp.Optional[tp.Dict[str, int]] = None) -> tp.Dict[str, np.ndarray]:
    """Realistic inputs of graph ``name`` (token ids from the tokenizer, masks of ones, small wavs), every
    dynamic axis sized from the graph's declared profile (:func:`graph_sizes`)."""
    from jasco_runtime.text import TextTokenizer

    rng = np.random.default_rng(seed)
    g = folder.graphs[name]
    sizes = sizes or graph_sizes(folder, name, rows)
    out = {}
    for spec in g.inputs:
        missing = [d for d in spec.shape if isinstance(d, str) and d not in sizes]
        if missing:
            raise CheckFailed(f"{name}: input {spec.name} has axes {missing} without a profile in the manifest")
        shape = tuple(sizes[d] if isinstance(d, str) else int(d) for d in spec.shape)
        if spec.name == "input_ids":
            ids, _ = TextTokenizer(folder.file("tokenizer"))((PROMPTS * rows)[:rows])
            n = shape[1]
            out["input_ids"] = np.pad(ids, ((0, 0), (0, max(0, n - ids.shape[1]))))[:, :n].astype(np.int64)
        elif spec.name == "attention_mask":
            out["attention_mask"] = np.ones(shape, np.int64)
        elif spec.name == "t":
            out["t"] = rng.uniform(0, 1, shape).astype(np.float32)
        elif spec.name == "wav":
            out["wav"] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _noise(ef, rows: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, ef.n_frames, ef.latent_dim)).astype(np.float32)


# -- phase 2: the tiny export on the CPU ----------------------------------------------------------------------

def tiny_export(work: Path) -> Path:
    """The tiny chords-drums model exported (fp32 + fp16) under ``work`` (the check's own, offline hub)."""
    from jasco_export.exporter import ExportOptions, run_export
    from jasco_export.tiny.presets import make_tiny_models

    make_tiny_models(work, variants=("chords-drums",))
    folder = work / "tiny-export"
    run_export(ExportOptions(model="jasco-tiny/chords-drums", out=folder, force=True, run_parity=False))
    return folder


def cpu_checks(report: Report, folder: Path) -> np.ndarray:
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends import open_engine
    from jasco_runtime.errors import InputError
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    ef = ExportFolder.open(folder)
    reference: tp.Dict[str, np.ndarray] = {}

    def compat() -> str:
        bad = {n: r.problems for n, r in ef.tensorrt.compatibility.items() if not r.ok}
        if bad:
            raise CheckFailed(f"TensorRT compatibility problems: {bad}")
        return f"{len(ef.tensorrt.compatibility)} graphs ok"

    report.check("tensorrt compatibility record", compat)

    def pipeline_cpu() -> tp.Dict[str, tp.Any]:
        with JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cpu"], precision="fp32") as pipe:
            res = pipe.generate(PROMPTS, init_noise=_noise(ef), **DEMO)
        if not np.isfinite(res.audio).all():
            raise CheckFailed("non-finite audio")
        reference["latents"] = res.latents
        return {"nfe": res.nfe, "seconds": round(res.timings["total"], 3)}

    report.check("pipeline on ONNX Runtime CPU (2 prompts, Euler 10)", pipeline_cpu)

    def cuda_refused() -> str:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "skipped: this onnxruntime has CUDA (checked on the GPU below)"
        try:
            open_engine(ef, ArtifactKey("text_encoder", "fp32", "onnx"), providers=["cuda"])
        except InputError as exc:
            return f"refused: {str(exc)[:80]}..."
        raise CheckFailed("an explicit cuda provider ran without CUDA")

    report.check("explicit --provider cuda without CUDA is refused", cuda_refused)
    return reference["latents"]


# -- phase 3: PyTorch eager, first ------------------------------------------------------------------------------

def torch_flow_step(preset: str, device: str, seed: int = 0):
    """(flow-step module, its inputs as torch tensors) of ``preset``'s architecture with random weights, built
    in memory on ``device`` (no hub, no checkpoint, no export: seconds, not the minutes of make-tiny)."""
    import torch

    from jasco_export.graphs.spec import FlowStep
    from jasco_export.reference.builders import build_flow_model
    from jasco_export.reference.config import parse_xp_cfg
    from jasco_export.tiny.presets import PRESETS, randomize_, tiny_xp_cfg

    p = PRESETS[preset]
    cfg = parse_xp_cfg(tiny_xp_cfg(False, org=p["org"], **p["arch"]))
    with torch.device("meta"):
        model = build_flow_model(cfg, t5_dim=p["t5"]["d_model"])
    model = model.to_empty(device=device)
    randomize_(model, torch.Generator().manual_seed(seed))
    temporal = [n for n in ("chords", "self_wav", "melody") if n in model.condition_provider.conditioners]
    module = FlowStep(model, temporal).eval()
    T, tr = int(np.ceil(cfg.segment_duration * cfg.frame_rate)), cfg.transformer
    g = torch.Generator().manual_seed(seed + 1)
    dims = {"chords": tr.chords_dim, "self_wav": tr.drums_dim, "melody": tr.melody_dim}
    feeds = [torch.randn(FLOW_ROWS, T, tr.flow_dim, generator=g), torch.rand(FLOW_ROWS, generator=g),
             torch.randn(FLOW_ROWS, FLOW_TEXT, tr.dim, generator=g)]
    feeds += [torch.randn(FLOW_ROWS, T, dims[n], generator=g) for n in temporal]
    return module, [x.to(device) for x in feeds]


def torch_timings(report: Report, presets: tp.Sequence[str], runs: int) -> None:
    import torch

    from .variants import _autocast

    dev = TORCH_DEVICE
    for preset in presets:
        def timed(preset: str = preset) -> str:
            module, feeds = torch_flow_step(preset, dev)
            old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 is fp32
            try:
                with torch.no_grad():
                    for precision in ("fp32", "fp16"):
                        def call(precision: str = precision) -> tp.Any:
                            with _autocast(dev, precision):
                                return to_host(module(*feeds))
                        report.timing(f"{preset} flow step ({FLOW_ROWS} rows) PyTorch {precision} eager"
                                      f"{' autocast' if precision == 'fp16' else ' (TF32 off)'} [{dev}]",
                                      call, no_sync, runs, 3)
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
                del module, feeds
                if dev == "cuda":
                    torch.cuda.empty_cache()
            return "timed"

        try:
            report.check(f"timings: {preset} flow step, PyTorch eager", timed)
        except CheckFailed:
            continue


# -- phase 4: ONNX Runtime CUDA -----------------------------------------------------------------------------------

def ort_cuda_checks(report: Report, folder: Path, cpu_latents: tp.Optional[np.ndarray], runs: int) -> None:
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends import open_engine
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder
    from jasco_runtime.verify import FP16_E2E_REL_L2, FP16_REL_L2, FP32_MAX_ABS

    ef = ExportFolder.open(folder)

    def provider_active() -> str:
        e = open_engine(ef, ArtifactKey("flow_step", "fp16", "onnx"), providers=["cuda"])  # refuses a CPU fallback
        return f"session providers: {e.providers}"

    report.check("ONNX Runtime CUDA provider really active", provider_active)
    for name in ef.runtime_graphs():
        key = ef.resolve(name, "onnx", "fp16")

        def graph(name: str = name, key=key) -> tp.Dict[str, float]:
            cpu = open_engine(ef, ArtifactKey(name, "fp32", "onnx"), providers=["cpu"])
            gpu = open_engine(ef, key, providers=["cuda"])
            worst = {}
            batch = ef.graphs[name].profile.get("batch", {"min": 1, "max": 1})
            for rows in sorted({int(batch.min), int(batch.max)}):
                feeds = graph_inputs(ef, name, rows)
                ref, got = cpu(**feeds), gpu(**feeds)
                for out, r in ref.items():
                    if r.dtype.kind == "f":
                        worst[f"{out}@{rows}"] = (rel_l2(got[out], r) if key.precision != "fp32"
                                                  else float(np.max(np.abs(got[out] - r))))
            limit = FP16_REL_L2 if key.precision != "fp32" else 10 * FP32_MAX_ABS  # fp32 on another device
            if max(worst.values()) > limit:
                raise CheckFailed(f"{key} on CUDA vs fp32 CPU: {worst} > {limit}")
            return worst

        metric = "rel L2" if key.precision != "fp32" else "max abs, TF32 off"
        report.check(f"{name} {key.precision} on ORT CUDA vs fp32 CPU ({metric})", graph)

    def pipeline_cuda() -> tp.Dict[str, float]:
        with JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cuda"]) as pipe:
            res = pipe.generate(PROMPTS, init_noise=_noise(ef), **DEMO)
        if cpu_latents is None:
            raise CheckFailed("no CPU reference (the CPU pipeline check failed)")
        err = rel_l2(res.latents, cpu_latents)
        if err > FP16_E2E_REL_L2:
            raise CheckFailed(f"latents rel L2 {err:.3e} > {FP16_E2E_REL_L2}")
        return {"latents_rel_l2": err, **device_loop_traffic(res)}

    report.check("pipeline on ORT CUDA fp16 vs CPU fp32 (2 prompts, Euler 10)", pipeline_cuda)
    report.check("ORT CUDA: dopri5 with the state on the device vs its host loop", lambda: dopri5_device_loop(
        lambda: JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cuda"]), _noise(ef)))
    report.check(f"ORT CUDA: no device-memory growth over {MEMORY_GENERATIONS} generations",
                 lambda: memory_growth(lambda: JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cuda"])))
    report.check("timings: tiny ORT CUDA", lambda: runtime_timings(
        report, folder, "tiny", "ORT CUDA", dict(backend="onnxruntime", providers=["cuda"]),
        lambda ef: open_engine(ef, ArtifactKey("flow_step", "fp16", "onnx"), providers=["cuda"]), runs))


DOPRI5_PLAN_BYTES = 13 * 256 * 4  # dopri5's step plan at its widest (flow-step chunks of up to 256 rows)
DOPRI5_NORM_BYTES = 4 * 1024  # its error norm's squared sums: a 256-byte row per prompt chunk, generously
DOPRI5_NFE_SLACK = 12  # on a GPU the stage sums and norms round differently: a step may be accepted or not


def device_loop_traffic(res: tp.Any, fixed_step: bool = True) -> tp.Dict[str, tp.Any]:
    """Where the ODE state lived and what crossed per evaluation: a fixed-step GPU solve that copied anything per
    evaluation fails, a dopri5 one that copied more per attempted step than its step plan and error norm."""
    t = res.traffic
    out = {"ode_loop": res.ode_loop, "nfe": res.nfe, "h2d_bytes_per_nfe": t.get("h2d_bytes_per_nfe"),
           "d2h_bytes_per_nfe": t.get("d2h_bytes_per_nfe"), "allocations_per_nfe": t.get("allocations_per_nfe")}
    if fixed_step:
        over = any(out[k] for k in ("h2d_bytes_per_nfe", "d2h_bytes_per_nfe"))
    else:  # f(t0) and the initial probe, then 6 evaluations per attempted step: a plan and a norm each
        rounds = (res.nfe - 2) // 6 + 2
        out["h2d_bytes_per_step"] = (out["h2d_bytes_per_nfe"] or 0) * res.nfe / rounds
        out["d2h_bytes_per_step"] = (out["d2h_bytes_per_nfe"] or 0) * res.nfe / rounds
        over = out["h2d_bytes_per_step"] > DOPRI5_PLAN_BYTES or out["d2h_bytes_per_step"] > DOPRI5_NORM_BYTES
    if res.ode_loop != "device" or out["allocations_per_nfe"] or over:
        raise CheckFailed(f"the ODE loop was not device-resident: {out}")
    return out


def dopri5_device_loop(open_pipe: tp.Callable[[], tp.Any], noise: np.ndarray) -> tp.Dict[str, tp.Any]:
    """dopri5 with the state on the device vs the same engines' host loop: NFE within a step or two (the GPU rounds
    stage sums and norms its own way), latents within fp16 rounding, and only the step plans and error norms
    crossing per attempted step."""
    from jasco_runtime.verify import FP16_E2E_REL_L2

    kw = {**{k: v for k, v in DEMO.items() if k != "steps"}, "solver": "dopri5"}
    with open_pipe() as pipe:
        got = pipe.generate(PROMPTS, init_noise=noise, **kw)
        pipe.core.device_loop = False
        ref = pipe.generate(PROMPTS, init_noise=noise, **kw)
    err = rel_l2(got.latents, ref.latents)
    if abs(got.nfe - ref.nfe) > DOPRI5_NFE_SLACK or err > FP16_E2E_REL_L2:
        raise CheckFailed(f"device loop vs host loop: NFE {got.nfe} vs {ref.nfe}, latents rel L2 {err:.3e}")
    return {"latents_rel_l2_vs_host_loop": err, "host_loop_nfe": ref.nfe,
            "host_loop_h2d_bytes_per_nfe": ref.traffic.get("h2d_bytes_per_nfe"),
            **device_loop_traffic(got, fixed_step=False)}


def memory_growth(open_pipe: tp.Callable[[], tp.Any]) -> tp.Dict[str, int]:
    """Device memory before vs after 20 generations alternating the shapes of :data:`MEMORY_SHAPES`; every
    shape is generated once first (new CFG row counts allocate arena chunks and search conv algorithms
    the first time: that is warm-up, not growth)."""
    with open_pipe() as pipe:
        for prompts, steps in MEMORY_SHAPES:
            pipe.generate(PROMPTS[:prompts], seed=0, **{**DEMO, "steps": steps})
        before = device_memory_used()
        for i in range(MEMORY_GENERATIONS):
            prompts, steps = MEMORY_SHAPES[i % len(MEMORY_SHAPES)]
            pipe.generate(PROMPTS[:prompts], seed=i, **{**DEMO, "steps": steps})
        growth = device_memory_used() - before
    if growth > MEMORY_GROWTH_LIMIT:
        raise CheckFailed(f"device memory grew by {growth / 2**20:.1f} MiB over {MEMORY_GENERATIONS} generations")
    return {"growth_bytes": growth}


def runtime_timings(report: Report, folder: Path, label: str, backend: str, pipe_kwargs: tp.Dict[str, tp.Any],
                    open_flow: tp.Callable[[tp.Any], tp.Any], runs: int, e2e: bool = True) -> str:
    """The flow step (``FLOW_ROWS`` rows, :data:`TIMING_RULES`) and, for the tiny model, one demo generation."""
    from jasco_runtime import JascoPipeline
    from jasco_runtime.export_folder import ExportFolder

    ef = ExportFolder.open(folder)
    feeds = graph_inputs(ef, "flow_step", FLOW_ROWS, sizes={**graph_sizes(ef, "flow_step", FLOW_ROWS),
                                                           "text_len": FLOW_TEXT})
    engine = open_flow(ef)
    try:
        with contextlib.ExitStack() as keep:  # the timed inputs on the device for the timings, freed after
            report.timing(f"{label} flow step ({FLOW_ROWS} rows) {backend} fp16", bind_engine(engine, feeds, keep),
                          no_sync, runs, 3)
    finally:
        engine.close()
    if e2e:
        with JascoPipeline.from_dir(folder, **pipe_kwargs) as pipe:
            for loop in (True, False):  # the ODE state on the device, then crossing host memory per evaluation
                pipe.core.device_loop = loop
                report.timing(f"{label} end to end (2 prompts, Euler 10) {backend}, {'device' if loop else 'host'} loop",
                              lambda: pipe.generate(PROMPTS, seed=0, **DEMO), no_sync, max(2, runs // 4), 1)
    return "timed"


# -- phase 5: TensorRT ------------------------------------------------------------------------------------------

def tensorrt_checks(report: Report, folder: Path, work: Path, ort_cuda: bool, runs: int) -> Path:
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends import open_engine
    from jasco_runtime.errors import InputError
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder
    from jasco_runtime.tensorrt.build import BuildOptions, build_folder
    from jasco_runtime.verify import FP16_E2E_REL_L2, FP16_REL_L2

    ref_providers = ["cuda"] if ort_cuda else ["cpu"]
    ref_name = "ORT CUDA" if ort_cuda else "ORT CPU"
    engines = work / "tiny-engines"
    shutil.rmtree(engines, ignore_errors=True)
    shutil.copytree(folder, engines)
    report.check("TensorRT: build the tiny engines", lambda: [str(k) for k in build_folder(ExportFolder.open(engines))])

    def rebuild() -> str:
        build_folder(ExportFolder.open(engines), BuildOptions(graphs=["flow_step"]))
        info = ExportFolder.open(engines).artifact(ArtifactKey("flow_step", "fp16", "tensorrt")).info
        if not info.get("timing_cache_reused"):
            raise CheckFailed("the timing cache was not reused")
        return f"rebuilt in {info['seconds']} s with the cached timings"

    report.check("TensorRT: timing cache reused on rebuild", rebuild)
    ef = ExportFolder.open(engines)
    for name in ef.runtime_graphs():
        def engine(name: str = name) -> tp.Dict[str, float]:
            key = ef.resolve(name, "tensorrt", "fp16")
            ref = open_engine(ef, ArtifactKey(name, key.precision, "onnx"), providers=ref_providers)
            worst = {}
            with open_engine(ef, key) as trt:
                lo, hi = trt.profile[trt.input_names[0]][0][0], trt.max_batch
                for rows in sorted({lo, hi}):
                    feeds = graph_inputs(ef, name, rows)
                    got, want = trt(**feeds), ref(**feeds)
                    for out, r in want.items():
                        if r.dtype.kind == "f":
                            worst[f"{out}@{rows}"] = rel_l2(got[out], r)
                try:
                    trt(**graph_inputs(ef, name, hi + 1))
                except InputError as exc:
                    if "optimisation profile" not in str(exc):
                        raise
                else:
                    raise CheckFailed(f"a batch of {hi + 1} ran on an engine built for {hi}")
            if max(worst.values()) > FP16_REL_L2:
                raise CheckFailed(f"{key} vs {ref_name}: {worst}")
            return worst

        report.check(f"TensorRT {name}: profile min/max vs {ref_name}, over-profile batch raises", engine)

    def corrupted() -> str:
        bad = work / "tiny-engines-corrupt"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(engines, bad)
        plan = bad / ExportFolder.open(bad).artifact(ArtifactKey("flow_step", "fp16", "tensorrt")).file
        data = bytearray(plan.read_bytes())
        data[: len(data) // 2] = bytes(len(data) // 2)
        plan.write_bytes(bytes(data))
        try:
            JascoPipeline.from_dir(bad, backend="tensorrt")
        except InputError as exc:
            if "build-engines" not in str(exc):
                raise
            return str(exc)[:100]
        finally:
            shutil.rmtree(bad, ignore_errors=True)
        raise CheckFailed("a corrupted plan loaded")

    report.check("TensorRT: corrupted plan gives the rebuild error", corrupted)

    def pipeline_trt() -> tp.Dict[str, float]:
        with JascoPipeline.from_dir(engines, backend="tensorrt") as pipe:
            got = pipe.generate(PROMPTS, init_noise=_noise(ef), **DEMO)
        with JascoPipeline.from_dir(engines, backend="onnxruntime", providers=ref_providers) as pipe:
            ref = pipe.generate(PROMPTS, init_noise=_noise(ef), **DEMO)
        err = rel_l2(got.latents, ref.latents)
        if err > FP16_E2E_REL_L2:
            raise CheckFailed(f"latents rel L2 {err:.3e} > {FP16_E2E_REL_L2}")
        return {"latents_rel_l2": err, **device_loop_traffic(got)}

    report.check(f"TensorRT pipeline vs {ref_name} (2 prompts, Euler 10)", pipeline_trt)
    report.check("TensorRT: dopri5 with the state on the device vs its host loop", lambda: dopri5_device_loop(
        lambda: JascoPipeline.from_dir(engines, backend="tensorrt"), _noise(ef)))
    report.check(f"TensorRT: no device-memory growth over {MEMORY_GENERATIONS} generations",
                 lambda: memory_growth(lambda: JascoPipeline.from_dir(engines, backend="tensorrt")))
    report.check("timings: tiny TensorRT", lambda: runtime_timings(
        report, engines, "tiny", "TensorRT", dict(backend="tensorrt"),
        lambda ef: open_engine(ef, ef.resolve("flow_step", "tensorrt", "fp16")), runs))
    return engines


# -- phase 6: the big flow step on the runtimes ---------------------------------------------------------------

def flow_export(report: Report, work: Path, preset: str, ort_cuda: bool, trt: bool, runs: int) -> None:
    """``preset``'s flow step exported alone (make-tiny + export: minutes of CPU for 400M, so last) and timed."""
    from jasco_runtime.backends import open_engine
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    def export() -> Path:
        from jasco_export.exporter import ExportOptions, run_export
        from jasco_export.tiny.presets import PRESETS, make_tiny_models

        out = work / f"{preset}-flow"
        if not (out / "manifest.json").is_file():
            make_tiny_models(work, preset=preset, variants=("chords-drums",))  # cached under work/hub
            run_export(ExportOptions(model=f"{PRESETS[preset]['org']}/chords-drums", out=out, graphs=["flow_step"],
                                     run_parity=False, force=True))
        return out

    folder = report.check(f"{preset} flow step exported (fp32 + fp16 ONNX)", export)
    label = f"{preset} (flow-step export)"
    if ort_cuda:
        report.check(f"timings: {preset} flow step, ORT CUDA", lambda: runtime_timings(
            report, folder, label, "ORT CUDA", {}, lambda ef: open_engine(ef, ArtifactKey("flow_step", "fp16", "onnx"),
                                                                          providers=["cuda"]), runs, e2e=False))
    if trt:
        def trt_timing() -> str:
            from jasco_runtime.tensorrt.build import BuildOptions, build_folder

            build_folder(ExportFolder.open(folder), BuildOptions(graphs=["flow_step"]))
            return runtime_timings(report, folder, label, "TensorRT", {},
                                   lambda ef: open_engine(ef, ef.resolve("flow_step", "tensorrt", "fp16")), runs,
                                   e2e=False)

        report.check(f"timings: {preset} flow step, TensorRT", trt_timing)


# -- main -----------------------------------------------------------------------------------------------------

def _phase(report: Report, fn: tp.Callable[[], tp.Any]) -> tp.Any:
    """Run a phase; a failed check ends it (already recorded), the run goes on."""
    try:
        return fn()
    except (CheckFailed, PhaseSkipped):
        return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the two reports, gpu_check.json / gpu_check.md")
    p.add_argument("--work", type=Path, help="folder for the hub cache, exports and engines (default: a temporary "
                                             "folder, removed at the end)")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget; checked before each phase "
                                                                 "(default 540: one 10-minute command)")
    p.add_argument("--engines", type=Path, help="an existing tiny export folder (default: export the tiny model)")
    p.add_argument("--flow-preset", default="400m", choices=("400m", "1b", "tiny", "none"),
                   help="the architecture of the big flow-step timing (default 400m; none: skip it)")
    p.add_argument("--no-400m", action="store_true", help="same as --flow-preset none")
    p.add_argument("--runs", type=int, default=20, help="timed calls per timing (median reported)")
    return p


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    if a.runs < 1 or a.budget_s <= 0:
        print("gpu_check: error: --runs must be >= 1 and --budget-s > 0", file=sys.stderr)
        return 2
    preset = "none" if a.no_400m else a.flow_preset
    own_work = a.work is None
    work = Path(tempfile.mkdtemp(prefix="jasco-gpu-check-")) if own_work else a.work
    work.mkdir(parents=True, exist_ok=True)
    # one offline hub for the tiny and big random models (assigned, not setdefault: an image's own
    # HF_HUB_CACHE would make the loads read another cache than make_tiny_models wrote)
    saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ["HF_HUB_CACHE"] = str(work / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    report = Report(a.out, budget_s=a.budget_s)
    try:
        return _run(report, a, work, preset)
    finally:
        for k, v in saved.items():  # an in-process caller (the dry-run test) gets its environment back
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _run(report: Report, a: argparse.Namespace, work: Path, preset: str) -> int:
    report.versions = _phase(report, lambda: report.check("versions", versions)) or {}
    tiny: tp.Optional[Path] = a.engines
    if tiny is None:
        why = next((f"{m}: {r}" for m in ("torch", "transformers", "onnx")
                    if (r := _importable(m)) is not None), None)
        if report.phase("tiny export", why):
            tiny = _phase(report, lambda: report.check("export the tiny model (fp32 + fp16)", lambda: tiny_export(work)))
    cpu_latents = None
    if tiny is not None and report.phase("cpu"):
        cpu_latents = _phase(report, lambda: cpu_checks(report, Path(tiny)))
    report.gpu = gpu_unavailable()
    if report.gpu is not None:
        report.result = "FAILED at " + report.failures[0] if report.failures else "passed (CPU only)"
        report.write()
        if report.failures:
            print(f"gpu_check: FAILED at {report.failures[0]} (see {a.out / 'gpu_check.md'})", file=sys.stderr)
            return 1
        print(f"gpu_check: no CUDA GPU here ({report.gpu}); ran the {len(report.checks)} checks that need none",
              flush=True)
        return 0

    presets = ["tiny"] + ([preset] if preset not in ("none", "tiny") else [])
    if report.phase("torch timings", torch_cuda_unavailable()):
        torch_timings(report, presets, a.runs)
    ort_why = ort_cuda_unavailable() or (None if tiny is not None else "no tiny export")
    ort_ok = report.phase("ort cuda", ort_why)
    if ort_ok:
        _phase(report, lambda: ort_cuda_checks(report, Path(tiny), cpu_latents, a.runs))
    from jasco_runtime.backends import tensorrt_unavailable_reason

    trt_why = tensorrt_unavailable_reason() or (None if tiny is not None else "no tiny export")
    trt_ok = report.phase("tensorrt", trt_why)
    if trt_ok:
        _phase(report, lambda: tensorrt_checks(report, Path(tiny), work, ort_ok, a.runs))
    need = PHASE_SECONDS["flow export"] if preset in ("400m", "1b") else 30
    if preset != "none" and (ort_ok or trt_ok) and report.phase("flow export", _importable("torch"), need):
        _phase(report, lambda: flow_export(report, work, preset, ort_ok, trt_ok, a.runs))
    skipped = [c["check"] for c in report.checks if c["status"] == "SKIP"]
    if report.failures:
        report.result = f"FAILED at {report.failures[0]}"
        report.write()
        print(f"gpu_check: FAILED at {report.failures[0]} (see {a.out / 'gpu_check.md'})", file=sys.stderr)
        return 1
    report.result = "passed" + (f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else "")
    report.write()
    print(f"gpu_check: {report.result} — {len(report.checks)} checks, {len(report.timings)} timings — "
          f"{a.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
