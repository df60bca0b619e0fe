"""The CPU dry run of every GPU branch of ``python -m benchmarks.gpu_check``: ONNX Runtime's ``cuda`` aliased
to the CPU provider (tests/standins/ort_cuda.py), TensorRT through the strict stand-in, PyTorch on the CPU,
tiny sizes.  Every check and every timing runs; the numbers are CPU numbers and are not looked at."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks.gpu_check as gc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def dry_gpu(monkeypatch):
    """GPU machine of the dry run: ORT CUDA aliased to the CPU, TensorRT 11.4 (what pip installs today) on the
    strict stand-in, PyTorch on the CPU (the 10.13 stand-in runs the builder/backend tests)."""
    from conftest import install_trt_standin
    from standins.ort_cuda import AliasedCuda

    trt_standin = install_trt_standin(monkeypatch, 11)
    monkeypatch.setattr(gc, "TORCH_DEVICE", "cpu")
    monkeypatch.setattr(gc, "gpu_unavailable", lambda: None)
    monkeypatch.setattr(gc, "MEMORY_GENERATIONS", 4)  # CPU time: the loop, not its length, is what is checked
    yield AliasedCuda().install(monkeypatch), trt_standin
    trt_standin.uninstall()


def _report(out: Path) -> dict:
    return json.loads((out / "gpu_check.json").read_text())


def test_dry_run_runs_every_check_and_every_timing(tiny_engines, tmp_path, dry_gpu, capsys):
    ort_alias, standin = dry_gpu
    out, work = tmp_path / "out", tmp_path / "work"
    assert gc.main(["--out", str(out), "--work", str(work), "--engines", str(tiny_engines.out), "--flow-preset", "tiny",
                    "--runs", "2", "--budget-s", "7200"]) == 0  # a shared 2-core CI machine: no budget skips
    report = _report(out)
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert report["result"] == "passed", statuses
    assert set(statuses.values()) == {"PASS"}, statuses
    names = list(statuses)
    for expected in ("ONNX Runtime CUDA provider really active", "encodec_decoder fp16 on ORT CUDA vs fp32 CPU (rel L2)",
                     "drums_encoder fp32 on ORT CUDA vs fp32 CPU (max abs, TF32 off)",
                     "pipeline on ORT CUDA fp16 vs CPU fp32 (2 prompts, Euler 10)",
                     "ORT CUDA: no device-memory growth over 4 generations", "TensorRT: build the tiny engines",
                     "TensorRT encodec_decoder: profile min/max vs ORT CUDA, over-profile batch raises",
                     "TensorRT: corrupted plan gives the rebuild error", "TensorRT: no device-memory growth over 4 generations",
                     "tiny flow step exported (fp32 + fp16 ONNX)", "timings: tiny flow step, TensorRT"):
        assert expected in names
    # PyTorch first: its timings are the first timings written
    timings = list(report["timings"])
    assert timings[0].startswith("tiny flow step (3 rows) PyTorch fp32 eager")
    assert [t for t in timings if "PyTorch" in t] == timings[:2]
    for backend in ("ORT CUDA", "TensorRT"):
        assert f"tiny flow step (3 rows) {backend} fp16" in timings
        assert f"tiny end to end (2 prompts, Euler 10) {backend}, device loop" in timings
        assert f"tiny end to end (2 prompts, Euler 10) {backend}, host loop" in timings
        assert f"tiny (flow-step export) flow step (3 rows) {backend} fp16" in timings
    assert all(v["runs"] >= 2 and v["median_ms"] > 0 for v in report["timings"].values())
    for check in ("pipeline on ORT CUDA fp16 vs CPU fp32 (2 prompts, Euler 10)",
                  "TensorRT pipeline vs ORT CUDA (2 prompts, Euler 10)"):  # the ODE state stayed on the device
        detail = next(c["detail"] for c in report["checks"] if c["check"] == check)
        assert "'ode_loop': 'device'" in str(detail) and "'h2d_bytes_per_nfe': 0.0" in str(detail), detail
    for check in ("ORT CUDA: dopri5 with the state on the device vs its host loop",
                  "TensorRT: dopri5 with the state on the device vs its host loop"):  # plans and norms only
        detail = next(c["detail"] for c in report["checks"] if c["check"] == check)
        assert "'ode_loop': 'device'" in str(detail) and "'allocations_per_nfe': 0.0" in str(detail), detail
    # the reports are two small files, the work tree is elsewhere
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    assert sum(p.stat().st_size for p in out.iterdir()) < 64_000
    assert (work / "tiny-engines" / "manifest.json").is_file()
    # fp32 graphs on the CUDA provider run with TF32 off
    cuda_opts = ort_alias.options()
    assert cuda_opts and any(o.get("use_tf32") == "0" for o in cuda_opts)
    assert standin.snapshot()["allocations"] == 0  # every engine closed


def test_missing_onnxruntime_gpu_and_tensorrt_are_skips_and_pytorch_is_still_timed(tiny_engines, tmp_path, monkeypatch,
                                                                                   capsys):
    """Review #2: a GPU machine with CPU-only onnxruntime and no TensorRT: PyTorch timings, then SKIPs, exit 0."""
    monkeypatch.setattr(gc, "TORCH_DEVICE", "cpu")
    monkeypatch.setattr(gc, "gpu_unavailable", lambda: None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "out"
    assert gc.main(["--out", str(out), "--engines", str(tiny_engines.out), "--flow-preset", "none", "--runs", "1"]) == 0
    report = _report(out)
    rows = {c["check"]: c for c in report["checks"]}
    assert rows["ort cuda"]["status"] == "SKIP" and "onnxruntime-gpu" in rows["ort cuda"]["detail"]
    assert rows["tensorrt"]["status"] == "SKIP" and "TensorRT is not installed" in rows["tensorrt"]["detail"]
    assert [t for t in report["timings"]] == ["tiny flow step (3 rows) PyTorch fp32 eager (TF32 off) [cpu]",
                                              "tiny flow step (3 rows) PyTorch fp16 eager autocast [cpu]"]
    assert report["result"].startswith("passed (2 skipped")


def test_budget_is_checked_between_phases(tiny_engines, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "TORCH_DEVICE", "cpu")
    monkeypatch.setattr(gc, "gpu_unavailable", lambda: None)
    monkeypatch.setitem(gc.PHASE_SECONDS, "torch timings", 10_000)
    out = tmp_path / "out"
    assert gc.main(["--out", str(out), "--engines", str(tiny_engines.out), "--budget-s", "600", "--runs", "1"]) == 0
    rows = {c["check"]: c for c in _report(out)["checks"]}
    assert rows["torch timings"]["status"] == "SKIP"
    assert rows["torch timings"]["detail"].startswith("time budget:") and "--budget-s 600" in rows["torch timings"]["detail"]
    assert rows["pipeline on ONNX Runtime CPU (2 prompts, Euler 10)"]["status"] == "PASS"  # before: it had time


def test_graph_inputs_size_every_axis_from_the_declared_profile(tiny_engines):
    """Review #1: the decoder's ``frames`` axis raised KeyError; every named axis now comes from the profile."""
    from jasco_runtime.export_folder import ExportFolder

    ef = ExportFolder.open(tiny_engines.out)
    for name in ef.runtime_graphs():
        axes = ef.graphs[name].profile
        feeds = gc.graph_inputs(ef, name, 2)
        for spec in ef.graphs[name].inputs:
            for d, n in zip(spec.shape, feeds[spec.name].shape):
                assert n == (2 if d == "batch" else axes[d].opt if isinstance(d, str) else d)
    assert "frames" in ef.graphs["encodec_decoder"].profile


def test_runs_from_a_plain_checkout_without_omegaconf(tmp_path):
    """Review #3/#4: ``python -m benchmarks.gpu_check`` with only PYTHONPATH=runtime:export:. and omegaconf
    blocked: the parser builds and the tiny flow step builds in memory."""
    code = ("import sys; sys.modules['omegaconf'] = None\n"
            "import benchmarks.gpu_check as gc\n"
            "m, feeds = gc.torch_flow_step('tiny', 'cpu')\n"
            "print('ok', type(m).__name__, [tuple(f.shape) for f in feeds][:2])\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "runtime:export:.", "HOME": str(tmp_path)}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith(("PYENV", "VIRTUAL_ENV", "LD_"))})
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok FlowStep [(3, 500, 128), (3,)]" in res.stdout


def test_xp_cfg_without_omegaconf_matches_omegaconf(monkeypatch):
    """The plain-YAML fallback (GPU machines without omegaconf) gives omegaconf's config, interpolations
    resolved, on both tiny variants; a resolver in a key that is read names the fix."""
    pytest.importorskip("omegaconf")
    from jasco_export.errors import CheckpointError
    from jasco_export.reference.config import parse_xp_cfg
    from jasco_export.tiny.presets import tiny_xp_cfg

    with_omegaconf = [parse_xp_cfg(tiny_xp_cfg(m)) for m in (False, True)]
    monkeypatch.setitem(sys.modules, "omegaconf", None)
    assert [parse_xp_cfg(tiny_xp_cfg(m)) for m in (False, True)] == with_omegaconf
    assert with_omegaconf[1].transformer.melody_dim == 16 and with_omegaconf[0].conditioners["self_wav"].args["sample_rate"] == 32000
    with pytest.raises(CheckpointError, match="needs omegaconf to resolve; pip install omegaconf"):
        parse_xp_cfg(tiny_xp_cfg(False).replace("sample_rate: 32000", "sample_rate: ${oc.env:SR}"))
