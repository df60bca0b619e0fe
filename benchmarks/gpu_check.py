"""One command that proves the GPU path on the first machine that has a GPU.

    python -m benchmarks.gpu_check --out DIR [--engines TINY_EXPORT] [--no-400m]

Checks, in order, stopping at the first failure (exit 1; everything measured so far is written):

1. versions: Python, numpy, onnxruntime (+ providers), torch (+ CUDA), TensorRT / polygraphy / cuda-python,
   GPU name, compute capability, driver;
2. without a GPU: the tiny model's export (or ``--engines``) runs end to end on ONNX Runtime CPU, an explicit
   ``cuda`` provider is refused clearly, the TensorRT compatibility record is clean.  On a CPU-only machine
   the check says so in one line and exits 0 here;
3. ONNX Runtime CUDA: the CUDA provider really started; each fp16 graph on CUDA against the fp32 CPU
   reference within the export's fp16 gate (1e-2 relative L2); the pipeline (2 prompts, Euler 10) on CUDA
   against the CPU within the end-to-end gate (3e-2); no device-memory growth over 20 generations;
4. TensorRT (where tensorrt + polygraphy import): the tiny engines build, the timing cache is reused on
   rebuild, each engine at its profile min and max against ONNX Runtime, an over-profile batch raises, a
   corrupted plan gives the rebuild error, the TensorRT pipeline against ONNX Runtime CUDA, 20 generations
   without device-memory growth;
5. timings (medians, device synchronised): the 400M flow step (3 CFG rows) in PyTorch fp16 eager vs ONNX
   Runtime CUDA fp16 (IOBinding) vs TensorRT; end-to-end demo latency (tiny model, 2 prompts, Euler 10).

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``.  ``../shared/GPU.md`` says how to carry
onnxruntime-gpu and polygraphy to a GPU machine without a registry.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
import typing as tp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jasco_runtime.metrics import rel_l2

PROMPTS = ["funky groove with slap bass", "a calm piano ballad"]
DEMO = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=10, chords="C:0 F:4 G:6", progress=False)
MEMORY_GROWTH_LIMIT = 16 << 20  # bytes over 20 generations (allocator rounding, not per-generation leaks)


class CheckFailed(Exception):
    pass


@dataclass
class Report:
    out: Path
    versions: tp.Dict[str, tp.Any] = field(default_factory=dict)
    checks: tp.List[tp.Dict[str, tp.Any]] = field(default_factory=list)
    timings: tp.Dict[str, tp.Any] = field(default_factory=dict)
    gpu: tp.Optional[str] = None  # why there is no GPU, or None
    result: str = "running"

    def check(self, name: str, fn: tp.Callable[[], tp.Any]) -> tp.Any:
        """Run one check; a failure (exception or False) stops the run."""
        t0 = time.perf_counter()
        try:
            value = fn()
            ok = value is not False
            detail = value if isinstance(value, (str, dict)) else ""
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the run stops
            ok, value, detail = False, None, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        self.checks.append({"check": name, "status": "PASS" if ok else "FAIL", "detail": detail,
                            "seconds": round(time.perf_counter() - t0, 2)})
        print(f"[gpu_check] {'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)
        self.write()
        if not ok:
            raise CheckFailed(name)
        return value

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"schema": "jasco-trt-gpu-check/1", "result": self.result, "no_gpu": self.gpu, "versions": self.versions,
                "checks": self.checks, "timings": self.timings}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        lines = [f"# GPU check — {self.result}", "", f"GPU: {self.versions.get('gpu', 'none')}", "",
                 "| version | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in self.versions.items()]
        lines += ["", "| check | status | detail | s |", "|---|---|---|---|"]
        lines += [f"| {c['check']} | {c['status']} | {c['detail'] if isinstance(c['detail'], str) else json.dumps(c['detail'])} "
                  f"| {c['seconds']} |" for c in self.checks]
        if self.timings:
            lines += ["", "| timing | median ms | runs |", "|---|---|---|"]
            lines += [f"| {k} | {v['median_ms']:.3f} | {v['runs']} |" for k, v in self.timings.items()]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


# -- helpers ----------------------------------------------------------------------------------------------

def versions() -> tp.Dict[str, tp.Any]:
    import importlib.metadata as md

    from jasco_runtime.tensorrt.device import current_device
    from jasco_runtime.tensorrt.versions import tensorrt_versions

    out: tp.Dict[str, tp.Any] = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch"):
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
        out["cuda-python device"] = str(exc)
    smi = shutil.which("nvidia-smi")
    if smi:
        import subprocess

        res = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if res.returncode == 0 and res.stdout.strip():
            out["nvidia-smi"] = res.stdout.strip().splitlines()[0]
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


def device_memory_used() -> int:
    """Bytes in use on device 0 (cuda-python, else torch's view of the whole device)."""
    try:
        from jasco_runtime.tensorrt.device import memory_in_use

        return memory_in_use()
    except Exception:  # noqa: BLE001 - fall back to torch
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(total - free)


def median_ms(fn: tp.Callable[[], tp.Any], sync: tp.Callable[[], None], runs: int = 20, warmup: int = 3) -> tp.Dict[str, tp.Any]:
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


def graph_inputs(folder, name: str, rows: int, text_len: int, seed: int = 0) -> tp.Dict[str, np.ndarray]:
    """Realistic inputs of graph ``name`` (token ids from the tokenizer, masks of ones, small wavs)."""
    from jasco_runtime.text import TextTokenizer

    rng = np.random.default_rng(seed)
    g = folder.graphs[name]
    sizes = {"batch": rows, "text_len": text_len}
    out = {}
    for spec in g.inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec["shape"])
        if spec["name"] == "input_ids":
            ids, _ = TextTokenizer(folder.file("tokenizer"))((PROMPTS * rows)[:rows])
            out["input_ids"] = np.pad(ids, ((0, 0), (0, max(0, text_len - ids.shape[1]))))[:, :text_len].astype(np.int64)
        elif spec["name"] == "attention_mask":
            out["attention_mask"] = np.ones(shape, np.int64)
        elif spec["name"] == "t":
            out["t"] = rng.uniform(0, 1, shape).astype(np.float32)
        elif spec["name"] == "wav":
            out["wav"] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
    return out


# -- the checks ---------------------------------------------------------------------------------------------

def tiny_export(out: Path) -> Path:
    """The tiny chords-drums model exported (fp32 + fp16) under ``out`` (the check's own, offline hub)."""
    from jasco_export.exporter import ExportOptions, run_export
    from jasco_export.tiny.presets import make_tiny_models

    make_tiny_models(out, variants=("chords-drums",))
    folder = out / "tiny-export"
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
        noise = np.random.default_rng(0).standard_normal((2, ef.n_frames, ef.latent_dim)).astype(np.float32)
        with JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cpu"], precision="fp32") as pipe:
            res = pipe.generate(PROMPTS, init_noise=noise, **DEMO)
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


def ort_cuda_checks(report: Report, folder: Path, cpu_latents: np.ndarray) -> None:
    from jasco_runtime.verify import FP16_E2E_REL_L2, FP16_REL_L2
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends import open_engine
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    ef = ExportFolder.open(folder)

    def provider_active() -> str:
        e = open_engine(ef, ArtifactKey("flow_step", "fp16", "onnx"), providers=["cuda"])  # refuses a CPU fallback
        return f"session providers: {e.providers}"

    report.check("ONNX Runtime CUDA provider really active", provider_active)
    for name in ef.runtime_graphs():
        def graph(name: str = name) -> tp.Dict[str, float]:
            key = ef.resolve(name, "onnx", "fp16")
            cpu = open_engine(ef, ArtifactKey(name, "fp32", "onnx"), providers=["cpu"])
            gpu = open_engine(ef, key, providers=["cuda"])
            worst = {}
            for rows in (1, ef.graphs[name].max_size("batch") or 1):
                feeds = graph_inputs(ef, name, rows, 12)
                ref, got = cpu(**feeds), gpu(**feeds)
                for out, r in ref.items():
                    if r.dtype.kind == "f":
                        worst[f"{out}@{rows}"] = rel_l2(got[out], r)
            if max(worst.values()) > FP16_REL_L2:
                raise CheckFailed(f"{key} on CUDA vs fp32 CPU: rel L2 {worst} > {FP16_REL_L2}")
            return worst

        report.check(f"{name} {ef.resolve(name, 'onnx', 'fp16').precision} on ORT CUDA vs fp32 CPU", graph)

    def pipeline_cuda() -> tp.Dict[str, float]:
        noise = np.random.default_rng(0).standard_normal((2, ef.n_frames, ef.latent_dim)).astype(np.float32)
        with JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cuda"]) as pipe:
            res = pipe.generate(PROMPTS, init_noise=noise, **DEMO)
        err = rel_l2(res.latents, cpu_latents)
        if err > FP16_E2E_REL_L2:
            raise CheckFailed(f"latents rel L2 {err:.3e} > {FP16_E2E_REL_L2}")
        return {"latents_rel_l2": err}

    report.check("pipeline on ORT CUDA fp16 vs CPU fp32 (2 prompts, Euler 10)", pipeline_cuda)
    report.check("ORT CUDA: no device-memory growth over 20 generations",
                 lambda: memory_growth(lambda: JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cuda"])))


def memory_growth(open_pipe: tp.Callable[[], tp.Any]) -> tp.Dict[str, int]:
    with open_pipe() as pipe:
        pipe.generate(PROMPTS, seed=0, **{**DEMO, "steps": 2})  # warm-up: allocator arenas, workspaces
        before = device_memory_used()
        for i in range(20):
            pipe.generate(PROMPTS[: 1 + i % 2], seed=i, **{**DEMO, "steps": 2})
        growth = device_memory_used() - before
    if growth > MEMORY_GROWTH_LIMIT:
        raise CheckFailed(f"device memory grew by {growth / 2**20:.1f} MiB over 20 generations")
    return {"growth_bytes": growth}


def tensorrt_checks(report: Report, folder: Path, work: Path) -> Path:
    from jasco_runtime.verify import FP16_E2E_REL_L2, FP16_REL_L2
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends import open_engine
    from jasco_runtime.errors import InputError
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder
    from jasco_runtime.tensorrt.build import BuildOptions, build_folder

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
            ref = open_engine(ef, ArtifactKey(name, key.precision, "onnx"), providers=["cuda"])
            worst = {}
            with open_engine(ef, key) as trt:
                lo, hi = trt.profile[trt.input_names[0]][0][0], trt.max_batch
                for rows in (lo, hi):
                    feeds = graph_inputs(ef, name, rows, 12)
                    got, want = trt(**feeds), ref(**feeds)
                    for out, r in want.items():
                        if r.dtype.kind == "f":
                            worst[f"{out}@{rows}"] = rel_l2(got[out], r)
                with_extra = graph_inputs(ef, name, hi + 1, 12)
                try:
                    trt(**with_extra)
                except InputError as exc:
                    if "optimisation profile" not in str(exc):
                        raise
                else:
                    raise CheckFailed(f"a batch of {hi + 1} ran on an engine built for {hi}")
            if max(worst.values()) > FP16_REL_L2:
                raise CheckFailed(f"{key} vs ORT CUDA: {worst}")
            return worst

        report.check(f"TensorRT {name}: profile min/max vs ORT, over-profile batch raises", engine)

    def corrupted() -> str:
        bad = work / "tiny-engines-corrupt"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(engines, bad)
        plan = bad / "flow_step.fp16.plan"
        data = bytearray(plan.read_bytes())
        data[: len(data) // 2] = bytes(len(data) // 2)
        plan.write_bytes(bytes(data))
        try:
            JascoPipeline.from_dir(bad, backend="tensorrt")
        except InputError as exc:
            if "build-engines" not in str(exc):
                raise
            return str(exc)[:100]
        raise CheckFailed("a corrupted plan loaded")

    report.check("TensorRT: corrupted plan gives the rebuild error", corrupted)

    def pipeline_trt() -> tp.Dict[str, float]:
        noise = np.random.default_rng(0).standard_normal((2, ef.n_frames, ef.latent_dim)).astype(np.float32)
        with JascoPipeline.from_dir(engines, backend="tensorrt") as pipe:
            got = pipe.generate(PROMPTS, init_noise=noise, **DEMO)
        with JascoPipeline.from_dir(engines, backend="onnxruntime", providers=["cuda"]) as pipe:
            ref = pipe.generate(PROMPTS, init_noise=noise, **DEMO)
        err = rel_l2(got.latents, ref.latents)
        if err > FP16_E2E_REL_L2:
            raise CheckFailed(f"latents rel L2 {err:.3e} > {FP16_E2E_REL_L2}")
        return {"latents_rel_l2_vs_ort_cuda": err}

    report.check("TensorRT pipeline vs ORT CUDA (2 prompts, Euler 10)", pipeline_trt)
    report.check("TensorRT: no device-memory growth over 20 generations",
                 lambda: memory_growth(lambda: JascoPipeline.from_dir(engines, backend="tensorrt")))
    return engines


def timings(report: Report, work: Path, tiny: Path, trt_engines: tp.Optional[Path], flow_400m: bool) -> None:
    import torch

    from jasco_runtime import JascoPipeline

    def sync() -> None:
        torch.cuda.synchronize()

    for backend, kwargs in (("ort-cuda", dict(backend="onnxruntime", providers=["cuda"])),
                            ("tensorrt", dict(backend="tensorrt"))):
        path = tiny if backend == "ort-cuda" else trt_engines
        if path is None:
            continue
        with JascoPipeline.from_dir(path, **kwargs) as pipe:
            report.timings[f"tiny e2e demo (2 prompts, Euler 10) {backend}"] = median_ms(
                lambda: pipe.generate(PROMPTS, seed=0, **DEMO), sync, runs=5, warmup=1)
    report.write()
    if not flow_400m:
        return

    def flow_step() -> tp.Dict[str, float]:
        from jasco_export import get_pretrained
        from jasco_export.exporter import ExportOptions, run_export
        from jasco_export.tiny.presets import PRESETS, make_tiny_models
        from jasco_runtime.backends import open_engine
        from jasco_runtime.export_folder import ArtifactKey, ExportFolder

        repo = f"{PRESETS['400m']['org']}/chords-drums"
        make_tiny_models(work, preset="400m", variants=("chords-drums",))  # once; cached under work/hub
        export = work / "400m-flow"
        if not (export / "manifest.json").is_file():
            run_export(ExportOptions(model=repo, out=export, graphs=["flow_step"], run_parity=False, force=True))
        ef = ExportFolder.open(export)
        feeds = graph_inputs(ef, "flow_step", 3, 16)
        ort = open_engine(ef, ArtifactKey("flow_step", "fp16", "onnx"), providers=["cuda"])
        bound = {k: ort.to_device(v) for k, v in feeds.items()}
        report.timings["400M flow step (3 rows) ORT CUDA fp16, IOBinding"] = median_ms(lambda: ort.run_bound(bound), sync)
        from jasco_export.graphs.spec import declare_graphs

        jasco = get_pretrained(repo, device="cpu")
        module = declare_graphs(jasco)["flow_step"].module.half().cuda().eval()
        t_feeds = [torch.from_numpy(feeds[name]).cuda() for name in ef.graphs["flow_step"].input_names]
        t_feeds = [x.half() if x.is_floating_point() else x for x in t_feeds]
        with torch.no_grad():
            report.timings["400M flow step (3 rows) PyTorch fp16 eager"] = median_ms(lambda: module(*t_feeds), sync)
        if trt_engines is not None:
            from jasco_runtime.tensorrt.build import BuildOptions, build_folder

            build_folder(ef, BuildOptions(graphs=["flow_step"]))
            with open_engine(ef, ef.resolve("flow_step", "tensorrt", "fp16")) as trt:
                tbound = {k: trt.to_device(v) for k, v in feeds.items()}
                report.timings["400M flow step (3 rows) TensorRT fp16, device-resident"] = median_ms(
                    lambda: trt.run_bound(tbound), sync)
        return {k: round(v["median_ms"], 3) for k, v in report.timings.items() if k.startswith("400M")}

    report.check("timings: 400M flow step", flow_step)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json / gpu_check.md (and work files)")
    p.add_argument("--engines", type=Path, help="an existing tiny export folder (default: export the tiny model here)")
    p.add_argument("--no-400m", action="store_true", help="skip the 400M flow-step timings (they build a 2.3 GB model)")
    a = p.parse_args(argv)
    work = a.out / "work"
    # one offline hub for the tiny and 400M random models (huggingface_hub reads it once, at import)
    os.environ.setdefault("HF_HUB_CACHE", str(work / "hub"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    report = Report(a.out)
    try:
        report.versions = report.check("versions", versions) or {}
        tiny = a.engines or report.check("export the tiny model (fp32 + fp16)", lambda: tiny_export(work))
        cpu_latents = cpu_checks(report, Path(tiny))
        report.gpu = gpu_unavailable()
        if report.gpu is not None:
            report.result = "passed (CPU only)"
            report.write()
            print(f"gpu_check: no CUDA GPU here ({report.gpu}); ran the {len(report.checks)} checks that need none",
                  flush=True)
            return 0
        ort_cuda_checks(report, Path(tiny), cpu_latents)
        from jasco_runtime.backends import tensorrt_unavailable_reason

        why_not = tensorrt_unavailable_reason()
        trt_engines = None
        if why_not is None:
            trt_engines = tensorrt_checks(report, Path(tiny), work)
        else:
            report.checks.append({"check": "TensorRT", "status": "SKIP", "detail": why_not, "seconds": 0})
        timings(report, work, Path(tiny), trt_engines, not a.no_400m)
    except CheckFailed as exc:
        report.result = f"FAILED at {exc}"
        report.write()
        print(f"gpu_check: FAILED at {exc} (see {a.out / 'gpu_check.md'})", file=sys.stderr)
        return 1
    report.result = "passed"
    report.write()
    print(f"gpu_check: passed ({len(report.checks)} checks) — {a.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
