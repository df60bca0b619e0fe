"""Fetch (pip, cached), stub and import the real TensorRT / cuda-python bindings; dump their API.

``tensorrt-cu12-bindings`` 10.13.3.9 and ``tensorrt-cu13-bindings`` 11.4.0.106 are real pybind11 modules whose
native libraries (libnvinfer, libnvonnxparser, libnvinfer_plugin) are not installable here; stub libraries
exporting the symbols ``tensorrt.so`` imports (``nm -D --undefined-only``) are compiled with ``cc``, so the
module imports and every class, member, enum value and docstring signature can be read.  ``cuda-bindings`` 12/13
import without a driver (calls return cudaErrorInsufficientDriver).  The wheels are cached in
``$JASCO_TRT_WHEELS`` (default ``~/.cache/jasco-trt/wheels``); .ci/run downloads them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing as tp
import zipfile
from pathlib import Path

TRT_WHEELS = {10: ("tensorrt-cu12-bindings", "10.13.3.9"), 11: ("tensorrt-cu13-bindings", "11.4.0.106")}
CUDA_WHEELS = {12: ("cuda-bindings", "12.9.*"), 13: ("cuda-bindings", "13.*")}
PATHFINDER = ("cuda-pathfinder", "*")
# the symbols tensorrt.so of 10.13 / 11.4 imports from the three native libraries
STUB_C = """
void *createInferBuilder_INTERNAL(void *l, int v) { return 0; }
void *createInferRefitter_INTERNAL(void *e, void *l, int v) { return 0; }
void *createInferRuntime_INTERNAL(void *l, int v) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *r, void *l, int v) { return 0; }
void *createNvOnnxParser_INTERNAL(void *n, void *l, int v) { return 0; }
void *getBuilderPluginRegistry(int t) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void *l, const char *n) { return 0; }
int getInferLibVersion(void) { return 0; }
"""
DUMP = Path(__file__).with_name("dump.py")


def wheel_dir() -> Path:
    return Path(os.environ.get("JASCO_TRT_WHEELS", Path.home() / ".cache" / "jasco-trt" / "wheels"))


def _find(dist: str, version: str) -> tp.Optional[Path]:
    stem = dist.replace("-", "_")
    prefix = version.rstrip("*")
    for w in sorted(wheel_dir().glob(f"{stem}-{prefix}*.whl"), reverse=True):
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        if tag in w.name or "py3-none" in w.name:
            return w
    return None


def fetch(dist: str, version: str) -> tp.Tuple[tp.Optional[Path], str]:
    """(wheel, "") from the cache, downloading it with pip once; (None, why) when it cannot be had."""
    found = _find(dist, version)
    if found:
        return found, ""
    wheel_dir().mkdir(parents=True, exist_ok=True)
    spec = dist if version == "*" else f"{dist}=={version}"
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(wheel_dir()), spec], capture_output=True, text=True, timeout=300)
    found = _find(dist, version)
    if found:
        return found, ""
    return None, f"{spec} is not in the cache {wheel_dir()} and pip download failed: {res.stderr.strip()[-200:]}"


def extract(wheel: Path, into: Path) -> Path:
    out = into / wheel.stem
    if not out.exists():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(out)
    return out


def stubs(major: int, into: Path) -> tp.Tuple[tp.Optional[Path], str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) to build the stub TensorRT libraries"
    out = into / f"stubs{major}"
    out.mkdir(parents=True, exist_ok=True)
    src = out / "stub.c"
    src.write_text(STUB_C)
    for lib in ("nvinfer", "nvonnxparser", "nvinfer_plugin"):
        target = out / f"lib{lib}.so.{major}"
        if not target.exists():
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(target), str(src)], check=True, capture_output=True)
    return out, ""


def dump_tensorrt(major: int, into: Path) -> tp.Tuple[tp.Optional[tp.Dict[str, tp.Any]], str]:
    """The real bindings' API of TensorRT ``major`` (10 or 11), or (None, why not)."""
    wheel, why = fetch(*TRT_WHEELS[major])
    if wheel is None:
        return None, why
    libs, why = stubs(major, into)
    if libs is None:
        return None, why
    root = extract(wheel, into)
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs), "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, str(DUMP)], capture_output=True, text=True, env=env, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"the real tensorrt_bindings {TRT_WHEELS[major][1]} did not import on the stubs: {res.stderr[-800:]}")
    return json.loads(res.stdout), ""


def cuda_runtime_path(major: int, into: Path) -> tp.Tuple[tp.Optional[Path], str]:
    """A folder to put on PYTHONPATH that imports the real ``cuda.bindings.runtime`` of CUDA ``major``."""
    wheel, why = fetch(*CUDA_WHEELS[major])
    if wheel is None:
        return None, why
    pf, why = fetch(*PATHFINDER)
    if pf is None:
        return None, why
    out = into / f"cuda{major}"
    if not (out / "cuda" / "bindings").exists():
        for w in (wheel, pf):
            with zipfile.ZipFile(w) as z:
                z.extractall(out)
    return out, ""
