"""Fail-closed parity gate and ``verify`` (issue 8 §2, issue 12 §2): every listed artifact is checked,
a damaged one fails the gate, a folder copied elsewhere verifies without torch or the checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import as_schema_2_0

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]


def _copy(tiny_engines, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny_engines.out, dst)
    return dst


def _run(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _rows(report: dict) -> dict:
    return {(r["check"], r["artifact"], r["backend"], r["precision"]): r for r in report["rows"]}


# -- the export's gate ------------------------------------------------------------------------------------------
def test_export_gate_checks_every_listed_artifact_and_the_44k_stereo_drums_path(tiny_engines):
    from jasco_runtime.export_folder import ExportFolder

    folder = ExportFolder.open(tiny_engines.out)
    report = json.loads((tiny_engines.out / "parity.json").read_text())
    assert report["passed"] is True and report["uncovered"] == []
    checked = {r["artifact"] for r in report["rows"] if r["status"] == "PASS" and r["artifact"]}
    assert checked == {str(a.key) for a in folder.artifacts()}  # every artifact, none skipped
    assert {"flow_step fp16 onnx", "drums_encoder fp32 onnx", "encodec_decoder fp32 onnx"} <= checked
    # the declared fp32 fallback is the only SKIP, and it says so
    skips = [r for r in report["rows"] if r["status"] == "SKIP"]
    assert skips and all(r["reason"].startswith("declared:") for r in skips)
    assert {(r["check"], r["precision"]) for r in skips} == {("drums_encoder", "fp16"), ("solver_step", "fp16")}
    # end to end with a 44.1 kHz stereo drum stem (the resampler is on the gated path)
    assert folder.golden.e2e.settings["drums_sample_rate"] == 44100
    e2e = np.load(tiny_engines.out / "golden" / "e2e.npz")
    assert e2e["drums"].shape == (2, int(6.0 * 44100))
    lat = [r for r in report["rows"] if r["check"] == "e2e/euler10-latents" and r["precision"] == "fp32"]
    assert len(lat) == 1 and lat[0]["max_abs"] <= 1e-4  # runtime vs PyTorch reference, resampled drums


def test_gate_fails_closed_when_an_artifact_does_not_load(tiny_hub, tmp_path, monkeypatch):
    """A graph ONNX Runtime cannot load is a FAIL (it used to be a SKIP that passed), and nothing is written."""
    from jasco_export import exporter
    from jasco_export.errors import JascoError
    from jasco_export.exporter import ExportOptions, run_export

    real = exporter.build_tensorrt

    def then_truncate(folder, graphs, opts):  # the last step before the gate: damage one artifact
        real(folder, graphs, opts)
        path = folder.folder / "encodec_decoder.fp16.onnx"
        path.write_bytes(path.read_bytes()[:1000])

    monkeypatch.setattr(exporter, "build_tensorrt", then_truncate)
    out = tmp_path / "e"
    with pytest.raises(JascoError, match=r"parity gate failed .*encodec_decoder fp16 onnx.*cannot load"):
        run_export(ExportOptions(model="jasco-tiny/chords-drums", out=out, end_to_end=False))
    assert not out.exists() and list(tmp_path.iterdir()) == []


# -- jasco-run verify (torch-free) --------------------------------------------------------------------------------
def test_jasco_run_verify_passes_on_a_good_folder(tiny_engines, tmp_path):
    from jasco_runtime.cli import main
    from jasco_runtime.export_folder import ExportFolder

    folder = _copy(tiny_engines, tmp_path)
    assert main(["verify", str(folder), "--no-e2e"]) == 0
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and report["source"].startswith("jasco-run verify")
    listed = {str(a.key) for a in ExportFolder.open(folder).artifacts()}
    assert {r["artifact"] for r in report["rows"] if r["status"] == "PASS"} == listed


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_graph"])
def test_jasco_run_verify_names_a_file_of_another_size_before_anything_runs(tiny_engines, tmp_path, capsys, damage):
    from jasco_runtime.cli import main

    folder = _copy(tiny_engines, tmp_path)
    target = folder / "flow_step.fp16.onnx"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(4096))
    else:
        shutil.copy(folder / "encodec_decoder.fp16.onnx", target)
    assert main(["verify", str(folder), "--no-e2e"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flow_step.fp16.onnx has" in err[0] and "the manifest records" in err[0]
    assert not (folder / "verify.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_graph", "delete"])
def test_jasco_run_verify_fails_naming_a_damaged_graph(tiny_engines, tmp_path, capsys, damage):
    """Without digests (a schema 2.0 folder), or a missing file: every check still runs and FAILs naming it."""
    from jasco_runtime.cli import main

    folder = _copy(tiny_engines, tmp_path)
    if damage != "delete":
        as_schema_2_0(folder)
    target = folder / "flow_step.fp16.onnx"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(4096))
    elif damage == "other_graph":
        shutil.copy(folder / "encodec_decoder.fp16.onnx", target)
    else:
        target.unlink()
    assert main(["verify", str(folder), "--no-e2e"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flow_step fp16 onnx" in err[0]
    report = json.loads((folder / "verify.json").read_text())
    bad = [r for r in report["rows"] if r["artifact"] == "flow_step fp16 onnx"]
    assert bad and all(r["status"] == "FAIL" for r in bad)
    assert [r for r in report["rows"] if r["artifact"] == "flow_step fp32 onnx" and r["status"] == "PASS"]


def test_verify_fails_when_a_graph_computes_something_else(tiny_engines, tmp_path):
    """Loads and runs, wrong numbers: the golden comparison catches it (not only load errors)."""
    import onnx
    from onnx import numpy_helper

    from jasco_runtime.export_folder import ArtifactKey, ExportFolder
    from jasco_runtime.verify import verify_folder

    folder = _copy(tiny_engines, tmp_path)
    path = folder / "encodec_decoder.fp32.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda i: int(np.prod(i.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1e-2  # one weight nudged
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    f = ExportFolder.open(folder)
    f.add_artifact(ArtifactKey("encodec_decoder", "fp32", "onnx"))  # recorded as written: past the digest check
    report = verify_folder(f, end_to_end=False, log=lambda m: None)
    assert not report["passed"]
    rows = [r for r in report["rows"] if r["artifact"] == "encodec_decoder fp32 onnx"]
    assert rows and any(r["status"] == "FAIL" and "max_abs" in r["reason"] for r in rows)


def test_verify_without_golden_set_is_a_clear_error(tiny_engines, tmp_path, capsys):
    from jasco_runtime.cli import main

    folder = _copy(tiny_engines, tmp_path)
    shutil.rmtree(folder / "golden")
    assert main(["verify", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "golden" in err[0] and "jasco-export verify" in err[0]


def test_verify_of_a_backend_that_is_not_installed_is_a_clear_error(tiny_engines, tmp_path, capsys):
    from jasco_runtime.cli import main

    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    assert main(["verify", str(_copy(tiny_engines, tmp_path)), "--backend", "tensorrt"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_listed_engine_of_a_backend_missing_here_is_a_declared_skip(tiny_engines, tmp_path):
    """A TensorRT engine listed in the manifest on a machine without TensorRT: a SKIP row with its reason
    (auto), never a silent omission; the ONNX artifacts are still all checked."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder
    from jasco_runtime.verify import verify_folder

    folder = ExportFolder.open(_copy(tiny_engines, tmp_path))
    key = ArtifactKey("flow_step", "fp16", "tensorrt")
    (folder.folder / key.default_file).write_bytes(b"plan")
    folder.add_artifact(key)
    report = verify_folder(folder, end_to_end=False, log=lambda m: None)
    rows = [r for r in report["rows"] if r["artifact"] == str(key)]
    assert [r["status"] for r in rows] == ["SKIP"] and "TensorRT is not installed" in rows[0]["reason"]
    assert report["passed"] and report["uncovered"] == []


def test_copied_folder_verifies_without_torch_or_hub_cache(tiny_engines, tmp_path):
    """Issue 12: export on one machine, copy, `jasco-run verify` on another (no torch, no hub cache)."""
    folder = _copy(tiny_engines, tmp_path, "elsewhere")
    code = textwrap.dedent(f"""
        import sys
        for m in ("torch", "transformers", "jasco_export", "julius", "huggingface_hub"):
            sys.modules[m] = None
        from jasco_runtime.cli import main
        code = main(["verify", {str(folder)!r}])
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        sys.exit(code)
    """)
    r = _run("-c", code, env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PASSED" in r.stdout and "e2e/euler10-latents" in r.stdout
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and any(r["check"].startswith("e2e/") and r["status"] == "PASS" for r in report["rows"])


# -- jasco-export verify ------------------------------------------------------------------------------------------
def test_jasco_export_verify_reruns_the_gate_and_names_a_corrupted_graph(tiny_engines, tmp_path):
    folder = _copy(tiny_engines, tmp_path)
    ok = _run("-m", "jasco_export.cli", "verify", str(folder), "--no-e2e")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((folder / "parity.json").read_text())["source"].startswith("jasco-export verify")
    target = folder / "text_encoder.fp32.onnx"
    target.write_bytes(target.read_bytes()[:2048])
    bad = _run("-m", "jasco_export.cli", "verify", str(folder), "--no-e2e")
    assert bad.returncode == 2  # the recorded size differs: named before the model loads
    last = bad.stderr.strip().splitlines()[-1]
    assert "text_encoder.fp32.onnx has 2048 bytes" in last
    as_schema_2_0(folder)  # no digests: the gate runs and names the graph it cannot load
    bad = _run("-m", "jasco_export.cli", "verify", str(folder), "--no-e2e")
    assert bad.returncode == 1
    last = bad.stderr.strip().splitlines()[-1]
    assert "text_encoder fp32 onnx" in last and "cannot load" in last
    assert (folder / "golden" / "flow_step.npz").is_file()  # the folder's own golden set is left alone


# -- metrics and gates ---------------------------------------------------------------------------------------------
def test_metrics_fail_on_non_finite_and_shape_mismatch():
    from jasco_runtime.metrics import max_abs, rel_l2
    from jasco_runtime.verify import Gate, compare

    ref = np.ones((2, 3), np.float32)
    assert rel_l2(np.zeros(3), np.zeros(3)) == 0.0 and rel_l2(np.ones(3), np.zeros(3)) == float("inf")
    assert max_abs(np.ones(2), ref) == float("inf")
    nan = ref.copy()
    nan[0, 0] = np.nan
    row = compare("x", None, "onnxruntime", "fp32", ref, nan, Gate("max_abs", 1e-4))
    assert row["status"] == "FAIL" and "non-finite" in row["reason"]
    assert compare("x", None, "onnxruntime", "fp32", ref, ref + 5e-5, Gate("max_abs", 1e-4))["status"] == "PASS"
    assert compare("x", None, "onnxruntime", "fp32", ref, ref + 2e-4, Gate("max_abs", 1e-4))["status"] == "FAIL"
    assert compare("x", None, "onnxruntime", "fp32", ref, ref[:1], Gate("max_abs", 1e-4))["status"] == "FAIL"


def test_drums_gate_tolerates_a_near_tie_code_flip_but_not_many():
    from jasco_runtime.export_folder import ArtifactKey
    from jasco_runtime.verify import Gate, compare_drums

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 64, (1, 500))
    emb = rng.standard_normal((1, 500, 2)).astype(np.float32)
    key = ArtifactKey("drums_encoder", "fp32", "onnx")
    flipped_codes, flipped = codes.copy(), emb.copy()
    flipped_codes[0, 100] += 1
    flipped[0, 99:102] += 0.5  # its blur group changes
    ok = compare_drums("d", key, "onnxruntime", {"drums": emb, "codes": codes}, {"drums": flipped, "codes": flipped_codes},
                       Gate("max_abs", 1e-4))
    assert ok["status"] == "PASS" and ok["frames_compared"] == 497
    many = codes.copy()
    many[0, :10] += 1
    bad = compare_drums("d", key, "onnxruntime", {"drums": emb, "codes": codes}, {"drums": emb, "codes": many},
                        Gate("max_abs", 1e-4))
    assert bad["status"] == "FAIL" and "codes agree" in bad["reason"]


# -- the TensorRT branch, through the strict stand-in (issue 12 §2) -----------------------------------------------
def test_verify_runs_tensorrt_engines_and_fails_a_damaged_plan(tiny_engines, tmp_path, trt_standin):
    from jasco_runtime.cli import main
    from jasco_runtime.export_folder import ExportFolder

    folder = _copy(tiny_engines, tmp_path)
    trt_standin.build_engines(folder)
    engines = [str(a.key) for a in ExportFolder.open(folder).artifacts() if a.key.backend == "tensorrt"]
    assert len(engines) == 5 and "drums_encoder fp32 tensorrt" in engines  # fp32-only graph → fp32 engine
    before = trt_standin.snapshot()
    assert main(["verify", str(folder), "--backend", "tensorrt"]) == 0
    assert trt_standin.snapshot() == before  # every engine and generation freed its device memory
    report = json.loads((folder / "verify.json").read_text())
    passed = {r["artifact"] for r in report["rows"] if r["status"] == "PASS" and r["artifact"]}
    assert passed == set(engines)  # ONNX artifacts are "not selected" SKIPs, each engine checked
    assert any(r["check"].startswith("e2e/") and r["backend"] == "tensorrt" and r["status"] == "PASS"
               for r in report["rows"])
    plan = folder / "flow_step.fp16.plan"
    plan.write_bytes(plan.read_bytes()[: plan.stat().st_size // 3])
    assert main(["verify", str(folder), "--backend", "tensorrt", "--no-e2e"]) == 2  # the recorded size differs
    as_schema_2_0(folder)  # without digests the engine itself fails to load, a FAIL row
    assert main(["verify", str(folder), "--backend", "tensorrt", "--no-e2e"]) == 1
    rows = [r for r in json.loads((folder / "verify.json").read_text())["rows"] if r["artifact"] == "flow_step fp16 tensorrt"]
    assert rows and rows[0]["status"] == "FAIL" and "cannot load" in rows[0]["reason"]
