"""``python -m benchmarks.gpu_check`` on a machine without a GPU (CI): the checks that need none, one line
saying so, exit 0; a failed check stops the run with exit 1."""
from __future__ import annotations

import json
import shutil

from benchmarks.gpu_check import main


def test_cpu_only_machine_runs_the_cpu_checks_and_says_so_in_one_line(tiny_engines, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out"), "--engines", str(tiny_engines.out)]) == 0
    out = capsys.readouterr().out.splitlines()
    said = [ln for ln in out if ln.startswith("gpu_check:")]
    assert len(said) == 1 and said[0].startswith("gpu_check: no CUDA GPU here (") and "ran the 4 checks that need none" in said[0]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["result"] == "passed (CPU only)" and report["no_gpu"]
    assert [c["check"] for c in report["checks"]] == [
        "versions", "tensorrt compatibility record", "pipeline on ONNX Runtime CPU (2 prompts, Euler 10)",
        "explicit --provider cuda without CUDA is refused"]
    assert all(c["status"] == "PASS" for c in report["checks"])
    assert report["versions"]["onnxruntime providers"] and report["versions"]["numpy"]
    assert "| explicit --provider cuda without CUDA is refused | PASS |" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_a_failed_check_stops_the_run_with_exit_1(tiny_engines, tmp_path, capsys):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tensorrt"]["compatibility"]["flow_step"].update(ok=False, problems=["op 'Unique' is not supported"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--out", str(tmp_path / "out"), "--engines", str(folder)]) == 1
    assert "gpu_check: FAILED at tensorrt compatibility record" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["result"] == "FAILED at tensorrt compatibility record"
    assert [c["status"] for c in report["checks"]] == ["PASS", "FAIL"]
