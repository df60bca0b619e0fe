"""``python -m benchmarks.gpu_bundle DIR``: parts of at most the part size that join to the bundle, SHA256SUMS, an
``install.sh`` that installs with ``--no-index`` into a fresh venv (the project imports from there), and one line
naming the wheels the package index did not have."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import benchmarks.gpu_bundle as gb


@pytest.fixture(scope="module")
def bundle(tiny_engines, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    record = gb.write_bundle(out, download_wheels=False, tiny_export=tiny_engines.out, part_mb=2, log=lambda m: None)
    return out, record


def test_parts_are_small_and_join_to_the_bundle(bundle, tmp_path):
    out, record = bundle
    parts = sorted(out.glob(f"{gb.PART_PREFIX}*"))
    assert len(parts) >= 2 and [p.name for p in parts] == [p["file"] for p in record["parts"]]
    assert all(p.stat().st_size <= 2_000_000 for p in parts)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        names = tar.getnames()
    assert "wheels" in names and any(n.startswith("wheels/jasco_trt-") for n in names)
    assert "tiny-export/manifest.json" in names
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sums == {p.name: gb.sha256(p) for p in parts}
    assert json.loads((out / "bundle.json").read_text())["missing"][0]["why"] == "--no-download"
    assert subprocess.run(["bash", "-n", str(out / "install.sh")]).returncode == 0


def test_install_sh_installs_offline_into_a_fresh_venv(bundle, tmp_path):
    out, _ = bundle
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    target = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    env["PYTHON"] = str(py)
    res = subprocess.run(["bash", str(out / "install.sh"), str(target)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"installed 1 wheel(s) into {target}" in res.stdout
    assert "provider probe: no CUDAExecutionProvider" in res.stdout  # the CPU build answers, and says so
    assert (out / "unpacked" / "tiny-export" / "manifest.json").is_file()
    res = subprocess.run([str(py), "-c", "import jasco_runtime, jasco_export; print(jasco_runtime.__file__)"],
                         capture_output=True, text=True, env={**env, "PYTHONPATH": str(target)}, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().startswith(str(target))
    # a damaged part is caught before anything is unpacked
    part = sorted(out.glob(f"{gb.PART_PREFIX}*"))[0]
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    try:
        res = subprocess.run(["bash", str(out / "install.sh"), str(tmp_path / "site2")], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode != 0 and "FAILED" in res.stdout + res.stderr
        assert not (tmp_path / "site2").exists()
    finally:
        data[100] ^= 0xFF
        part.write_bytes(bytes(data))


def test_missing_wheels_are_named_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gb, "download", lambda spec, dest, py, plat: (None, "No matching distribution found"))
    assert gb.main([str(tmp_path / "b"), "--no-tiny-export"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("gpu_bundle: wheels not available")]
    assert len(lines) == 1 and "onnxruntime-gpu==1.31.1 (No matching distribution found)" in lines[0]
    assert "polygraphy==0.53.6" in lines[0]
    record = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert [w.split("-")[0] for w in record["wheels"]] == ["jasco_trt"]


def test_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(SystemExit, match="is not empty"):
        gb.write_bundle(tmp_path / "b", download_wheels=False, make_tiny=False)
