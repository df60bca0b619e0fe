"""Shared fixtures: tiny release-format models in a private, offline Hugging Face cache.

HF_HUB_CACHE / HF_HUB_OFFLINE are read by huggingface_hub at import time, so they are set here,
before any test module imports it.
"""
from __future__ import annotations

import json
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


@pytest.fixture(scope="session")
def melody_engines(tiny_hub, tmp_path_factory) -> Path:
    """The tiny chords-drums-melody model exported fp32 (parity runs skipped: the runtime tests cover them)."""
    from jasco_export.exporter import ExportOptions, run_export

    out = tmp_path_factory.mktemp("engines-melody") / "chords-drums-melody"
    return run_export(ExportOptions(model="jasco-tiny/chords-drums-melody", out=out, precisions=("fp32",),
                                    run_parity=False, end_to_end=False)).out


def as_schema_2_0(folder: Path) -> None:
    """Rewrite an export folder's manifest as jasco-export wrote it before schema 2.1: no digests."""
    m = json.loads((folder / "manifest.json").read_text())
    m["schema_version"] = "2.0"
    for g in m["graphs"].values():
        for art in g["artifacts"].values():
            art.pop("digests", None)
    (folder / "manifest.json").write_text(json.dumps(m))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TINY_ROOT, ignore_errors=True)


def install_trt_standin(monkeypatch, api: int = 10):
    """Install the strict TensorRT stand-in modelling TensorRT ``api`` (10 = 10.13, 11 = 11.4)."""
    pytest.importorskip("polygraphy")
    from standins.tensorrt import TensorRTStandin

    return TensorRTStandin(api=api).install(monkeypatch)


@pytest.fixture(params=[10, 11], ids=["trt10", "trt11"])
def trt_standin(request, monkeypatch):
    """The strict TensorRT / CUDA / cuda-python stand-in (tests/standins/tensorrt.py), installed for one
    test under the real polygraphy, once modelling TensorRT 10.13 and once 11.4 (their enums and members from
    the real bindings).  ``trt_standin.build_engines(folder)`` builds a folder's engines with the real builder;
    ``trt_standin.snapshot()`` counts live device allocations and streams; ``trt_standin.gpu.traffic`` the
    bytes copied; ``trt_standin.set(compute_capability=(8, 9), trt_version=..., cuda_error=...)`` changes the
    machine."""
    standin = install_trt_standin(monkeypatch, request.param)
    yield standin
    standin.uninstall()


@pytest.fixture(scope="session")
def tiny_sep_engines(tiny_hub, tmp_path_factory):
    """Export folder of the tiny chords-drums model with the tiny random htdemucs as its drum separator."""
    pytest.importorskip("demucs")
    from jasco_export.exporter import ExportOptions, run_export

    out = tmp_path_factory.mktemp("engines-sep") / "chords-drums"
    return run_export(ExportOptions(model="jasco-tiny/chords-drums", out=out, separator="hf://jasco-tiny/htdemucs"))
