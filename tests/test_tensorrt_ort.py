"""ONNX Runtime's GPU providers: the providers a session really started, and the TensorRT EP's options.

This machine has the CPU build of onnxruntime.  An onnxruntime-gpu whose CUDA libraries do not load behaves
the same way (it lists CUDA/TensorRT as available, then logs "Failed to create ..." and runs on the CPU), so
the tests list the GPU providers as available and let the real session fall back.
"""
from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from jasco_runtime.backends import open_engine
from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import ArtifactKey, ExportFolder

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture()
def sessions(monkeypatch):
    """onnxruntime-gpu whose GPU providers cannot start; records what each session was asked for."""
    created = []
    real = ort.InferenceSession

    class Recording(real):
        def __init__(self, path, sess_options=None, providers=None, **kw):
            created.append(list(providers or []))
            super().__init__(path, sess_options=sess_options, providers=providers, **kw)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return created


@pytest.mark.parametrize("provider, name", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_explicit_gpu_provider_that_did_not_start_is_an_error(tiny_engines, sessions, provider, name):
    """Defect 9: ``--provider cuda`` used to run on the CPU silently (and benchmarks called it GPU)."""
    folder = ExportFolder.open(tiny_engines.out)
    with pytest.raises(InputError, match=f"ONNX Runtime could not start {name} for text_encoder \\(it runs on "
                                         "CPUExecutionProvider\\).*use --provider cpu"):
        open_engine(folder, ArtifactKey("text_encoder", "fp16", "onnx"), providers=[provider])


def test_auto_falls_back_to_the_cpu_with_a_warning(tiny_engines, sessions, caplog):
    folder = ExportFolder.open(tiny_engines.out)
    with caplog.at_level(logging.WARNING):
        engine = open_engine(folder, ArtifactKey("text_encoder", "fp32", "onnx"))
    assert sessions[-1] == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert engine.providers == ["CPUExecutionProvider"] and engine.on_gpu is False
    assert "could not start CUDAExecutionProvider" in caplog.text and "falling back to CPUExecutionProvider" in caplog.text


def test_tensorrt_execution_provider_is_configured_from_the_manifest(tiny_engines, sessions):
    """Defect 10: fp16, engine + timing caches under the export folder, the manifest's profile, CUDA fallback."""
    folder = ExportFolder.open(tiny_engines.out)
    with pytest.raises(InputError):
        open_engine(folder, ArtifactKey("flow_step", "fp16", "onnx"), providers=["tensorrt"])
    (trt, options), *fallbacks = sessions[-1]
    assert trt == "TensorrtExecutionProvider"
    assert fallbacks == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    cache = str(tiny_engines.out / "ort-trt-cache")
    axes = {name: r.to_dict() for name, r in folder.graphs["flow_step"].profile.items()}
    b, lmax = axes["batch"], axes["text_len"]["max"]
    assert options["trt_fp16_enable"] == "True" and options["trt_layer_norm_fp32_fallback"] == "True"
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == cache
    assert options["trt_timing_cache_enable"] == "True" and options["trt_timing_cache_path"] == cache
    assert options["trt_profile_max_shapes"] == (f"z:{b['max']}x500x128,t:{b['max']},text:{b['max']}x{lmax}x64,"
                                                 f"chords:{b['max']}x500x16,drums:{b['max']}x500x2")
    assert options["trt_profile_min_shapes"].startswith(f"z:{b['min']}x500x128,t:{b['min']},text:{b['min']}x1x64")
    with pytest.raises(InputError):  # the fp32-only drums encoder: no fp16 flag
        open_engine(folder, ArtifactKey("drums_encoder", "fp32", "onnx"), providers=["tensorrt"])
    assert sessions[-1][0][1]["trt_fp16_enable"] == "False"


@pytest.mark.parametrize("graph, precision, options", [
    ("drums_encoder", "fp32", {"use_tf32": "0"}),
    ("flow_step", "fp32", {"use_tf32": "0"}),
    ("flow_step", "fp16", {"use_tf32": "0"}),
    ("encodec_decoder", "fp16", {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"})])
def test_cuda_provider_runs_without_tf32(tiny_engines, sessions, graph, precision, options):
    """Review #10 / #19: ONNX Runtime's CUDA EP enables TF32 by default; fp32 graphs (and the fp32 islands of the
    mixed ones) must stay fp32, as the TensorRT builder clears TF32.  The decoder's dynamic ``frames`` axis gets
    the heuristic cuDNN search (the default exhaustive one searches again at every song length)."""
    folder = ExportFolder.open(tiny_engines.out)
    with pytest.raises(InputError):
        open_engine(folder, ArtifactKey(graph, precision, "onnx"), providers=["cuda"])
    assert sessions[-1] == [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


def test_tensorrt_ep_without_its_cuda_fallback_is_an_error(tiny_engines, sessions, monkeypatch):
    """Review #18: with ``--provider tensorrt`` the nodes TensorRT rejects run on the CUDA EP; when only the TRT EP
    started they would run on the CPU silently."""
    real = ort.InferenceSession

    class OnlyTensorRT(real):
        def get_providers(self):
            return ["TensorrtExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", OnlyTensorRT)
    folder = ExportFolder.open(tiny_engines.out)
    with pytest.raises(InputError, match="could not start CUDAExecutionProvider for flow_step"):
        open_engine(folder, ArtifactKey("flow_step", "fp16", "onnx"), providers=["tensorrt"])


def test_verify_runs_the_tensorrt_ep_artifacts_against_the_fp32_reference(tiny_engines, monkeypatch, capsys):
    """Review #11: ``jasco-run verify --provider tensorrt`` opens every ONNX artifact on ONNX Runtime's TensorRT EP
    (TRT-10-only, weakly typed; aliased to the CPU here) and gates it against the fp32 golden reference."""
    from standins.ort_cuda import AliasedCuda

    from jasco_runtime.cli import main

    def verify_main(argv):
        return main(["verify", *argv])

    alias = AliasedCuda(tensorrt=True).install(monkeypatch)
    verify_main([str(tiny_engines.out), "--backend", "onnxruntime", "--provider", "tensorrt", "--no-e2e",
                 "--out", str(tiny_engines.out.parent / "verify-trt-ep.json")])
    trt = alias.options("TensorrtExecutionProvider")
    assert trt and {o["trt_fp16_enable"] for o in trt} == {"True", "False"}  # fp16 artifacts and fp32 ones
    assert "PASSED" in capsys.readouterr().out
