"""``jasco-run build-engines`` and the shared builder (polygraphy's loaders) on the strict TensorRT stand-in.

What the builder must give TensorRT is checked against the manifest the exporter wrote (profiles) and the
documented TensorRT 10 rules the stand-in enforces (strongly typed networks refuse precision flags, TF32 is
on until cleared, timing caches carry a device header, plans are IHostMemory, not bytes).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from jasco_runtime.cli import main as jasco_run

RUNTIME_GRAPHS = ("text_encoder", "drums_encoder", "flow_step", "encodec_decoder")


@pytest.fixture()
def folder(tiny_engines, tmp_path):
    out = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, out)
    return out


def _manifest(folder: Path):
    return json.loads((folder / "manifest.json").read_text())


def _expected_profile(graph: dict, max_batch=None):
    """Each input's (min, opt, max) shape written out from the manifest's axes (independent of profiles.py)."""
    axes = {k: dict(v) for k, v in graph["profile"].items()}
    if max_batch:
        axes["batch"] = {"min": axes["batch"]["min"], "opt": min(axes["batch"]["opt"], max_batch), "max": max_batch}
    return {spec["name"]: [[axes[d][end] if isinstance(d, str) else d for d in spec["shape"]] for end in ("min", "opt", "max")]
            for spec in graph["inputs"]}


def test_build_engines_builds_strongly_typed_engines_from_the_manifest(folder, trt_standin, capsys):
    assert jasco_run(["build-engines", str(folder)]) == 0
    assert "built 5 engine(s)" in capsys.readouterr().out
    m = _manifest(folder)
    assert m["tensorrt"]["device"] == {**m["tensorrt"]["device"], "trt_version": trt_standin.config.trt_version, "gpu_name": "Stand-in H100",
                                       "compute_capability": "9.0", "cuda_driver": "12.8"}
    assert m["tensorrt"]["compatibility"]["flow_step"]["ok"]  # the exporter's record is kept
    builds = {b["source"]: b for b in trt_standin.builds}
    for name in RUNTIME_GRAPHS:
        g = m["graphs"][name]
        precision = "fp16" if "fp16" in g["precisions"] else "fp32"  # drums_encoder is fp32-only
        art = g["artifacts"][f"tensorrt-{precision}"]
        assert (folder / art["file"]).is_file() and art["file"] == f"{name}.{precision}.plan"
        b = builds[f"{name}.{precision}.onnx"]
        assert b["precision"] == precision and b["strongly_typed"]
        assert b["flags"] == [], "no precision flags on a strongly typed network; TF32 cleared (defect 7)"
        assert b["tf32"] is False
        assert b["profiles"] == [_expected_profile(g)]
        assert art["profile"] == _expected_profile(g)
    assert not list(folder.glob(".*tmp*")) and not list(folder.glob("*.lock"))


def test_timing_cache_is_reused_and_replaced_when_it_belongs_to_another_gpu(folder, trt_standin, capsys):
    assert jasco_run(["build-engines", str(folder), "--graphs", "flow_step"]) == 0
    first = trt_standin.builds[-1]
    assert first["cache_hits"] == 0 and first["cache_misses"] > 0
    assert jasco_run(["build-engines", str(folder), "--graphs", "flow_step"]) == 0
    again = trt_standin.builds[-1]
    assert again["cache_hits"] == first["cache_misses"] and again["cache_misses"] == 0
    assert _manifest(folder)["graphs"]["flow_step"]["artifacts"]["tensorrt-fp16"]["timing_cache_reused"] is True
    # the folder moves to an sm_89 board: its cache no longer applies (set_timing_cache refuses it) → a new one
    trt_standin.set(compute_capability=(8, 9), gpu_name="Stand-in L4")
    capsys.readouterr()
    assert jasco_run(["build-engines", str(folder), "--graphs", "flow_step"]) == 0
    assert "written by another GPU or TensorRT version" in capsys.readouterr().err  # build progress: logging, stderr
    assert trt_standin.builds[-1]["cache_hits"] == 0
    assert b'"device": "sm_89"' in (folder / "timing.cache").read_bytes()
    m = _manifest(folder)
    assert m["tensorrt"]["device"]["compute_capability"] == "8.9"
    # engines of the old GPU that were not rebuilt are dropped from the manifest
    assert set(k for g in m["graphs"].values() for k in g["artifacts"] if k.startswith("tensorrt")) == {"tensorrt-fp16"}
    assert "tensorrt-fp16" in m["graphs"]["flow_step"]["artifacts"]


def test_low_memory_options_reach_tensorrt_and_the_runtime_chunks_to_the_engine(folder, trt_standin):
    assert jasco_run(["build-engines", str(folder), "--workspace-gb", "1.5", "--builder-optimization-level", "1",
                      "--max-batch", "2"]) == 0
    for b in trt_standin.builds:
        assert b["workspace"] == int(1.5 * 2**30) and b["optimization_level"] == 1
        batched = [shapes for shapes in b["profiles"][0].values() if shapes[0][0] != shapes[2][0]]  # not c [3]
        assert batched and all(shapes[2][0] == 2 for shapes in batched)
    from jasco_runtime import JascoPipeline

    kw = dict(chords="C:0 F:4", cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=2, progress=False,
              init_noise=np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32))
    with JascoPipeline.from_dir(folder, backend="tensorrt") as pipe:
        assert pipe.engines["flow_step"].max_batch == 2
        got = pipe.generate(["funk", "jazz"], **kw)  # 3 CFG terms × 2 prompts = 6 rows → 3 chunks of 2
    ref = JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cpu"], precision="fp16").generate(["funk", "jazz"], **kw)
    np.testing.assert_allclose(got.latents, ref.latents, atol=1e-5)
    assert trt_standin.snapshot()["allocations"] == 0


@pytest.mark.parametrize("args, message", [
    (["--builder-optimization-level", "7"], "--builder-optimization-level must be 0..5"),
    (["--workspace-gb", "0"], "--workspace-gb must be in (0, 1024]"),
    (["--max-batch", "0"], "--max-batch must be 1..256"),
    (["--graphs", "vocoder"], "has no graph vocoder"),
])
def test_bad_options_exit_2_and_write_nothing(folder, trt_standin, capsys, args, message):
    before = sorted(p.name for p in folder.iterdir())
    assert jasco_run(["build-engines", str(folder), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert sorted(p.name for p in folder.iterdir()) == before and not trt_standin.builds


@pytest.mark.parametrize("error, message", [
    ("cudaErrorNoDevice", "no CUDA device is visible"),
    ("cudaErrorInsufficientDriver", "cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35) — no NVIDIA driver, or one older"),
])
def test_only_no_device_means_no_gpu(folder, trt_standin, capsys, error, message):
    """Defect 6: any cudaGetDeviceCount error used to read as "0 devices"; a too-old driver is said as it is."""
    trt_standin.set(cuda_error=error)
    assert jasco_run(["build-engines", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and (error == "cudaErrorNoDevice") == ("no CUDA device" in err)
    assert not list(folder.glob("*.plan"))


@pytest.mark.parametrize("version", ["12.0.0.1", "10.8.0.43", "9.3.0.1"])
def test_tensorrt_12_and_pre_10_13_are_refused(folder, trt_standin, capsys, version):
    """TensorRT 10.13+ and 11.x are accepted (review #17: 11 keeps everything the build path uses); a TensorRT
    whose API has not been checked (12) or older than 10.13 is refused with the install hint."""
    trt_standin.set(trt_version=version)
    assert jasco_run(["build-engines", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"TensorRT {version} found; jasco-trt supports TensorRT 10.x (>= 10.13) and 11.x" in err
    assert "tensorrt-cu13>=10.13,<12" in err
    assert ("newer major" in err) == version.startswith("12")
    assert not trt_standin.builds


def test_build_engines_needs_neither_torch_nor_onnxruntime(folder, trt_standin, monkeypatch):
    for blocked in ("torch", "onnxruntime", "jasco_export"):
        monkeypatch.setitem(sys.modules, blocked, None)
    assert jasco_run(["build-engines", str(folder)]) == 0
    assert len(list(folder.glob("*.plan"))) == 5


def test_parse_failure_is_a_one_line_error_and_leaves_no_plan(tmp_path, trt_standin):
    """The int64→int16 code round trip audiocraft does is a Cast TensorRT cannot parse."""
    import onnx
    from onnx import TensorProto, helper

    from jasco_runtime.tensorrt.build import EngineBuildError, build_engine

    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.INT16, name="to_int16"),
             helper.make_node("Cast", ["x16"], ["y"], to=TensorProto.INT64)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "i16.onnx"))
    with pytest.raises(EngineBuildError) as err:
        build_engine(tmp_path / "i16.onnx", tmp_path / "i16.plan", {"x": ((1, 4), (2, 4), (4, 4))}, tmp_path / "timing.cache")
    assert "i16.plan" in str(err.value) and "\n" not in str(err.value)
    assert any("Cast to INT16" in e for e in trt_standin.errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i16.onnx"]


def test_export_backend_trt_uses_the_shared_builder(tiny_cd, tiny_engines, tmp_path, trt_standin):
    """``jasco-export --backend trt``'s TensorRT step: the compatibility record, then the same builder."""
    from jasco_runtime.export_folder import ExportFolder

    from jasco_export.exporter import ExportOptions, build_tensorrt
    from jasco_export.graphs.spec import declare_graphs

    out = tmp_path / "export"
    shutil.copytree(tiny_engines.out, out)
    folder = ExportFolder.open(out)
    graphs = {k: v for k, v in declare_graphs(tiny_cd).items() if k in RUNTIME_GRAPHS}
    build_tensorrt(folder, graphs, ExportOptions(model="jasco-tiny/chords-drums", out=out, backend="trt"))
    m = _manifest(out)
    assert set(m["tensorrt"]["compatibility"]) == set(RUNTIME_GRAPHS)
    assert all(r["ok"] for r in m["tensorrt"]["compatibility"].values())
    assert m["tensorrt"]["device"]["gpu_name"] == "Stand-in H100" and "skipped" not in m["tensorrt"]
    assert sorted(b["source"] for b in trt_standin.builds) == ["drums_encoder.fp32.onnx", "encodec_decoder.fp16.onnx",
                                                               "flow_step.fp16.onnx", "text_encoder.fp16.onnx"]
    trt_standin.set(cuda_error="cudaErrorNoDevice")  # --backend all without a GPU: recorded and skipped
    build_tensorrt(folder, graphs, ExportOptions(model="jasco-tiny/chords-drums", out=out, backend="all"))
    assert "no CUDA device" in _manifest(out)["tensorrt"]["skipped"]


def test_gpu_extras_pin_tensorrt_10_or_11_with_the_matching_cuda_major():
    """Review #16/#17: ``gpu-cu12`` and ``gpu-cu13``: TensorRT 10.13 up to 11.x built for that CUDA major,
    cuda-python of the same major (cuda-python 13 needs a CUDA 13 driver), polygraphy>=0.53.6; onnxruntime-gpu
    only in cu13 (PyPI's 1.31 is a CUDA 13 build)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cuda in (12, 13):
        gpu = {r.name: r.specifier for r in map(Requirement, extras[f"gpu-cu{cuda}"])}
        trt = gpu[f"tensorrt-cu{cuda}"]
        assert trt.contains("10.13.3.9") and trt.contains("11.4.0.106") and not trt.contains("12.0.0")
        assert not trt.contains("10.12.0.36")
        assert gpu["cuda-python"].contains(f"{cuda}.9.0") and not gpu["cuda-python"].contains(f"{cuda + 1}.0.0")
        assert not gpu["cuda-python"].contains(f"{cuda - 1}.9.0")
        assert gpu["polygraphy"].contains("0.53.6") and not gpu["polygraphy"].contains("0.53.5")
    cu13 = {r.name: r.specifier for r in map(Requirement, extras["gpu-cu13"])}
    assert cu13["onnxruntime-gpu"].contains("1.31.1")
    assert "onnxruntime-gpu" not in {Requirement(r).name for r in extras["gpu-cu12"]}
    assert extras["gpu"] == extras["gpu-cu13"]
