"""Shared fixtures: tiny release-format models in a private, offline Hugging Face cache.

HF_HUB_CACHE / HF_HUB_OFFLINE are read by huggingface_hub at import time, so they are set here,
before any test module imports it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
_TINY_ROOT = Path(tempfile.mkdtemp(prefix="jasco-trt-tests-"))
os.environ["HF_HUB_CACHE"] = str(_TINY_ROOT / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_path(*parts: str) -> Path:
    """A file of ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available (../shared is not beside the checkout)")
    return p


@pytest.fixture(scope="session")
def tiny_hub() -> Path:
    """Hub cache holding jasco-tiny/{t5, encodec_32khz, chords-drums, chords-drums-melody}."""
    from jasco_export.tiny.presets import make_tiny_models

    return make_tiny_models(_TINY_ROOT)


@pytest.fixture(scope="session")
def tiny_cd(tiny_hub):
    """The tiny chords-drums model loaded through the hub id (same path as a real release)."""
    from jasco_export import get_pretrained

    return get_pretrained("jasco-tiny/chords-drums")


@pytest.fixture(scope="session")
def tiny_cdm(tiny_hub):
    from jasco_export import get_pretrained

    return get_pretrained("jasco-tiny/chords-drums-melody")


@pytest.fixture(scope="session")
def tiny_engines(tiny_hub, tmp_path_factory):
    """Export folder of the tiny chords-drums model (fp32 + fp16 ONNX, parity gate on)."""
    from jasco_export.exporter import ExportOptions, run_export

    out = tmp_path_factory.mktemp("engines") / "chords-drums"
    res = run_export(ExportOptions(model="jasco-tiny/chords-drums", out=out))
    return res


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TINY_ROOT, ignore_errors=True)


@pytest.fixture()
def trt_standin(monkeypatch):
    """The strict TensorRT 10 / CUDA / cuda-python stand-in (tests/standins/tensorrt.py), installed for one
    test under the real polygraphy.  ``trt_standin.build_engines(folder)`` builds a folder's engines with the
    real builder; ``trt_standin.snapshot()`` counts live device allocations and streams;
    ``trt_standin.set(compute_capability=(8, 9), trt_version=..., cuda_error=...)`` changes the machine."""
    pytest.importorskip("polygraphy")
    from standins.tensorrt import TensorRTStandin

    standin = TensorRTStandin().install(monkeypatch)
    yield standin
    standin.uninstall()


@pytest.fixture(scope="session")
def tiny_sep_engines(tiny_hub, tmp_path_factory):
    """Export folder of the tiny chords-drums model with the tiny random htdemucs as its drum separator."""
    pytest.importorskip("demucs")
    from jasco_export.exporter import ExportOptions, run_export

    out = tmp_path_factory.mktemp("engines-sep") / "chords-drums"
    return run_export(ExportOptions(model="jasco-tiny/chords-drums", out=out, separator="hf://jasco-tiny/htdemucs"))
