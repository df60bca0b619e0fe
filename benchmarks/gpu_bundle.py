"""An offline bundle for a GPU machine without a package registry (the project's GPU check machine, an air-gapped
server): the wheels it lacks, the project itself, the tiny export, split into parts of at most 60 MB, and an
``install.sh`` that joins, checks and installs them with ``--no-index`` and runs the ONNX Runtime provider probe.

    python -m benchmarks.gpu_bundle DIR [--python-version 3.12] [--platform manylinux_2_28_x86_64]
        [--tiny-export FOLDER | --no-tiny-export] [--part-mb 60] [--no-download]

On the target, after copying ``DIR``:

    bash DIR/install.sh [TARGET]          # TARGET default DIR/site; then
    export PYTHONPATH=TARGET:$PWD/runtime:$PWD/export:$PWD
    python -m benchmarks.gpu_check --out OUT --engines DIR/unpacked/tiny-export

Wheels (``pip download --no-deps --only-binary=:all:`` for the target's Python and platform, from whatever index
pip is configured with here): onnxruntime-gpu 1.31.1 (a CUDA 13.0 build, ~244 MiB: the one that needs
splitting), polygraphy 0.53.6, omegaconf 2.4.0 (vendors antlr4; needs only PyYAML), soundfile, and the project's
own wheel (built here with ``pip wheel --no-deps --no-build-isolation``).  A wheel the index does not have is
listed in ``bundle.json`` and in one line at the end; the bundle is written without it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import typing as tp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ("onnxruntime-gpu==1.31.1", "polygraphy==0.53.6", "omegaconf==2.4.0", "soundfile>=0.12")
PART_MB = 60
PART_PREFIX = "bundle.tar.part-"
PROBE = ("import onnxruntime as o; "
         "getattr(o, 'preload_dlls', lambda: None)(); "
         "p = o.get_available_providers(); print('onnxruntime', o.__version__, 'from', o.__file__); print('providers:', p); "
         "import sys; sys.exit(0 if 'CUDAExecutionProvider' in p else 3)")

INSTALL_SH = r"""#!/usr/bin/env bash
# Join, check and install the jasco-trt GPU bundle offline; then probe ONNX Runtime's providers.
#   bash install.sh [TARGET]   (TARGET default: <bundle>/site; PYTHON default: python3)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TARGET="${1:-$HERE/site}"
PY="${PYTHON:-python3}"
cd "$HERE"
sha256sum -c --quiet SHA256SUMS
rm -rf unpacked && mkdir -p unpacked
cat PARTS_GLOB | tar -x -C unpacked
shopt -s nullglob
wheels=(unpacked/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    "$PY" -m pip install --no-index --no-deps --upgrade --target "$TARGET" "${wheels[@]}"
fi
echo "installed ${#wheels[@]} wheel(s) into $TARGET"
echo "use: export PYTHONPATH=$TARGET:\$PWD/runtime:\$PWD/export:\$PWD   (from a jasco-trt checkout)"
if [ -d unpacked/tiny-export ]; then echo "tiny export: $HERE/unpacked/tiny-export (gpu_check --engines)"; fi
PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "PROBE" || echo "provider probe: no CUDAExecutionProvider (exit $?)"
"""


def download(spec: str, dest: Path, python_version: str, platform: str) -> tp.Tuple[tp.Optional[Path], str]:
    """(the wheel, "") or (None, why) — one ``pip download`` for the target's interpreter and platform."""
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "--platform", platform, "--platform", "any", "-d", str(dest), spec]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    new = sorted(set(dest.glob("*.whl")) - before)
    if res.returncode == 0 and new:
        return new[0], ""
    if res.returncode == 0:  # already there
        name = spec.split("=")[0].split(">")[0].replace("-", "_").lower()
        have = [w for w in dest.glob("*.whl") if w.name.lower().startswith(name + "-")]
        if have:
            return have[0], ""
    lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
    return None, lines[-1].strip() if lines else f"pip exited {res.returncode}"


def project_wheel(dest: Path) -> Path:
    """The project's own wheel, built from a copy of the sources (no build isolation: works offline with the
    setuptools installed here; the checkout gets no build/ or egg-info, and no stale build/lib is packaged)."""
    with tempfile.TemporaryDirectory(prefix="jasco-wheel-") as tmp:
        src = Path(tmp) / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        for folder in ("runtime", "export", "serve"):
            shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dest), str(src)], check=True, capture_output=True, text=True, timeout=900)
    return sorted(dest.glob("jasco_trt-*.whl"))[-1]


def split(stream: Path, out: Path, part_bytes: int) -> tp.List[Path]:
    """``stream`` cut into ``out/bundle.tar.part-NNN`` files of at most ``part_bytes``."""
    parts = []
    with open(stream, "rb") as f:
        while True:
            chunk = f.read(part_bytes)
            if not chunk:
                break
            part = out / f"{PART_PREFIX}{len(parts):03d}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bundle(out: Path, wheels: tp.Sequence[str] = WHEELS, python_version: str = "3.12",
                 platform: str = "manylinux_2_28_x86_64", tiny_export: tp.Optional[Path] = None,
                 make_tiny: bool = True, part_mb: float = PART_MB, download_wheels: bool = True,
                 log: tp.Callable[[str], None] = print) -> tp.Dict[str, tp.Any]:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"gpu_bundle: error: {out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    record: tp.Dict[str, tp.Any] = {"schema": "jasco-trt-gpu-bundle/1", "python_version": python_version,
                                    "platform": platform, "wheels": [], "missing": [], "tiny_export": None}
    with tempfile.TemporaryDirectory(prefix="jasco-gpu-bundle-") as tmp:
        stage = Path(tmp) / "stage"
        (stage / "wheels").mkdir(parents=True)
        if download_wheels:
            for spec in wheels:
                wheel, why = download(spec, stage / "wheels", python_version, platform)
                if wheel is None:
                    record["missing"].append({"wheel": spec, "why": why})
                    log(f"[gpu_bundle] not available: {spec} ({why})")
                else:
                    log(f"[gpu_bundle] {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
        else:
            record["missing"] += [{"wheel": s, "why": "--no-download"} for s in wheels]
        own = project_wheel(stage / "wheels")
        log(f"[gpu_bundle] {own.name} (the project)")
        record["wheels"] = sorted(w.name for w in (stage / "wheels").glob("*.whl"))
        if tiny_export is None and make_tiny:
            from .gpu_check import tiny_export as export_tiny

            log("[gpu_bundle] exporting the tiny model (fp32 + fp16) ...")
            tiny_export = export_tiny(Path(tmp) / "work")
        if tiny_export is not None:
            shutil.copytree(tiny_export, stage / "tiny-export")
            record["tiny_export"] = "tiny-export"
        stream = Path(tmp) / "bundle.tar"
        with tarfile.open(stream, "w") as tar:
            for item in sorted(stage.iterdir()):
                tar.add(item, arcname=item.name)
        parts = split(stream, out, int(part_mb * 1e6))
    record["parts"] = [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in parts]
    (out / "SHA256SUMS").write_text("".join(f"{p['sha256']}  {p['file']}\n" for p in record["parts"]))
    script = INSTALL_SH.replace("PARTS_GLOB", f"{PART_PREFIX}*").replace("PROBE", PROBE.replace('"', '\\"'))
    (out / "install.sh").write_text(script)
    (out / "install.sh").chmod(0o755)
    (out / "bundle.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bundle", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, metavar="DIR", help="a new folder for the parts, install.sh, SHA256SUMS")
    p.add_argument("--python-version", default="3.12", help="the target's Python (default 3.12)")
    p.add_argument("--platform", default="manylinux_2_28_x86_64", help="the target's wheel platform tag")
    p.add_argument("--tiny-export", type=Path, help="an existing tiny export folder to carry")
    p.add_argument("--no-tiny-export", action="store_true", help="carry no tiny export")
    p.add_argument("--part-mb", type=float, default=PART_MB, help="largest part in MB (default 60)")
    p.add_argument("--no-download", action="store_true", help="carry only the project's wheel (and the export)")
    a = p.parse_args(argv)
    if not 0 < a.part_mb <= 1024:
        print("gpu_bundle: error: --part-mb must be in (0, 1024]", file=sys.stderr)
        return 2
    if a.tiny_export is not None and not (a.tiny_export / "manifest.json").is_file():
        print(f"gpu_bundle: error: {a.tiny_export} is not an export folder (no manifest.json)", file=sys.stderr)
        return 2
    record = write_bundle(a.out, python_version=a.python_version, platform=a.platform, tiny_export=a.tiny_export,
                          make_tiny=not a.no_tiny_export, part_mb=a.part_mb, download_wheels=not a.no_download)
    size = sum(part["bytes"] for part in record["parts"]) / 2**20
    print(f"gpu_bundle: {len(record['parts'])} part(s), {size:.1f} MiB, {len(record['wheels'])} wheel(s) in {a.out}; "
          f"on the target: bash {a.out.name}/install.sh")
    if a.no_download:
        print("gpu_bundle: --no-download: no registry wheels carried (" + ", ".join(WHEELS) + ")")
    elif record["missing"]:
        print("gpu_bundle: wheels not available from the package index here (the bundle lacks them): "
              + "; ".join(f"{m['wheel']} ({m['why']})" for m in record["missing"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
