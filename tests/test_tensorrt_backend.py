"""The runtime's TensorRT backend through the strict TensorRT/CUDA stand-in (tests/standins/tensorrt.py).

The engines are built from the tiny export by the real builder (polygraphy's loaders) on the stand-in;
every tensor crosses fake device memory as raw bytes, so the numbers only come out right when the backend
binds the right buffers with the right dtypes and shapes.  TensorRT numerics themselves are not checked
here (benchmarks/gpu_check.py does that on a GPU).
"""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from jasco_runtime.errors import InputError

PROMPTS = ["funk", "a much longer piano ballad prompt"]


def _kw(batch: int = 2, steps: int = 3):
    return dict(chords="C:0 F:4", cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=steps, progress=False,
                init_noise=np.random.default_rng(0).standard_normal((batch, 500, 128)).astype(np.float32))


@pytest.fixture()
def trt_folder(tiny_engines, tmp_path, trt_standin):
    """A copy of the tiny export with engines built on the stand-in."""
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, folder)
    trt_standin.build_engines(folder)
    return folder


def _engine(folder, graph):
    from jasco_runtime.backends import open_engine
    from jasco_runtime.export_folder import ExportFolder

    f = ExportFolder.open(folder)
    return open_engine(f, f.resolve(graph, "tensorrt", "fp16"))


def _flow_inputs(rows: int, dtype=np.float32):
    rng = np.random.default_rng(1)
    return {"z": rng.standard_normal((rows, 500, 128)).astype(dtype), "t": np.full((rows,), 0.3, np.float32),
            "text": rng.standard_normal((rows, 7, 64)).astype(np.float32),
            "chords": rng.standard_normal((rows, 500, 16)).astype(np.float32),
            "drums": rng.standard_normal((rows, 500, 2)).astype(np.float32)}


def test_pipeline_through_tensorrt_matches_onnxruntime_on_the_same_graphs(trt_folder, trt_standin):
    """Every byte goes through fake device memory: the TensorRT pipeline gives ONNX Runtime's result on the
    graphs the engines were built from (fp16 ONNX; drums fp32)."""
    from jasco_runtime import JascoPipeline

    with JascoPipeline.from_dir(trt_folder, backend="tensorrt") as pipe:
        got = pipe.generate(PROMPTS, drums=np.random.default_rng(2).standard_normal(32000 * 3).astype(np.float32),
                            drums_sample_rate=32000, **_kw())
    # text, drums, 3 evaluations (the flow step over all CFG rows at once, then solver_step: the device loop), decoder
    assert trt_standin.executions == 1 + 1 + 3 * 2 + 1
    ref = JascoPipeline.from_dir(trt_folder, backend="onnxruntime", providers=["cpu"], precision="fp16").generate(
        PROMPTS, drums=np.random.default_rng(2).standard_normal(32000 * 3).astype(np.float32), drums_sample_rate=32000,
        **_kw())
    np.testing.assert_allclose(got.latents, ref.latents, atol=1e-5)
    np.testing.assert_allclose(got.audio, ref.audio, atol=1e-5)


def test_twenty_generations_leave_no_device_allocation_behind(trt_folder, trt_standin):
    """Issue 9 defect 1: buffers are allocated once per engine at the profile's max shape, the generation's
    condition tensors are freed when it ends, and close() frees everything."""
    from jasco_runtime import JascoPipeline

    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}
    pipe = JascoPipeline.from_dir(trt_folder, backend="tensorrt")
    opened = trt_standin.snapshot()
    pipe.generate(PROMPTS, **_kw(steps=1))
    first = trt_standin.snapshot()
    for i in range(1, 20):
        pipe.generate(["funk"] if i % 2 else PROMPTS, **_kw(batch=1 if i % 2 else 2, steps=1))
        assert trt_standin.snapshot() == first, f"generation {i} changed the device allocations"
    assert first == opened and opened["streams"] == 5 and opened["allocations"] > 0  # all allocated at open
    mallocs = trt_standin.gpu.mallocs
    pipe.close()
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}
    assert trt_standin.gpu.frees == mallocs
    pipe.close()  # idempotent


def test_engine_buffers_are_allocated_once_at_the_profile_max(trt_folder, trt_standin):
    engine = _engine(trt_folder, "flow_step")
    opened = trt_standin.gpu.mallocs
    for rows in (1, 6, 2):
        out = engine(**_flow_inputs(rows))["v"]
        assert out.shape == (rows, 500, 128) and np.isfinite(out).all()
    assert trt_standin.gpu.mallocs == opened  # smaller shapes are views of the max-shape buffers
    assert engine.max_batch == 6
    engine.close()
    assert trt_standin.snapshot()["allocations"] == 0


def test_out_of_profile_batch_is_a_clear_error(trt_folder, trt_standin):
    """Defect 2: set_input_shape returns False outside the profile; the engine says so instead of sizing
    the output from stale dims."""
    engine = _engine(trt_folder, "flow_step")
    with pytest.raises(InputError, match=r"flow_step: input z of shape \[7, 500, 128\] is outside the engine's "
                                         r"optimisation profile \(min \[1, 500, 128\], max \[6, 500, 128\]\)"):
        engine(**_flow_inputs(7))
    assert trt_standin.executions == 0
    assert any("out of the optimization profile range" in e for e in trt_standin.errors)
    engine.close()


def test_refused_tensor_address_stops_the_call(trt_folder, trt_standin, monkeypatch):
    """Defect 2: set_tensor_address's result is checked (TensorRT refuses e.g. unaligned pointers)."""
    from standins import tensorrt as standin

    engine = _engine(trt_folder, "text_encoder")
    monkeypatch.setattr(standin.IExecutionContext, "set_tensor_address", lambda self, name, memory: False)
    with pytest.raises(RuntimeError, match="refused the device address of input_ids"):
        engine(input_ids=np.ones((1, 4), np.int64), attention_mask=np.ones((1, 4), np.int64))
    assert trt_standin.executions == 0
    engine.close()


def test_input_dtype_is_checked_against_the_engine(trt_folder, trt_standin):
    """Defect 4: TensorRT reads raw bytes, so an int32 array where the engine takes int64 must be refused."""
    engine = _engine(trt_folder, "text_encoder")
    with pytest.raises(ValueError, match="input_ids is int32, the engine expects int64"):
        engine(input_ids=np.ones((1, 4), np.int32), attention_mask=np.ones((1, 4), np.int64))
    with pytest.raises(ValueError, match="expects float32"):
        _engine(trt_folder, "flow_step")(**_flow_inputs(1, dtype=np.float64))
    assert trt_standin.executions == 0
    engine.close()


def test_no_deprecated_polygraphy_path_per_buffer_access(trt_folder, trt_standin, capsys):
    """Defect 3: DeviceArray.dtype goes through polygraphy's deprecated NumPy path (removed in 0.55) and logs a
    warning on every access; the backend keeps its own dtypes."""
    engine = _engine(trt_folder, "flow_step")
    capsys.readouterr()
    bound = {k: engine.to_device(v) for k, v in _flow_inputs(3).items() if k not in ("z", "t")}
    for _ in range(3):
        engine.run_bound({"z": _flow_inputs(3)["z"], "t": np.full((3,), 0.5, np.float32), **bound})["v"].numpy()
    out = capsys.readouterr()
    assert "In the future" not in out.out + out.err and "deprecated" not in (out.out + out.err).lower()
    for t in bound.values():
        t.free()
    engine.close()


def test_device_tensors_are_owned_and_freed(trt_folder, trt_standin):
    engine = _engine(trt_folder, "flow_step")
    before = trt_standin.snapshot()["allocations"]
    inputs = _flow_inputs(2)
    bound = {k: engine.to_device(v) for k, v in inputs.items() if k != "z"}
    assert trt_standin.snapshot()["allocations"] == before + 4
    v = engine.run_bound({"z": inputs["z"], **bound})["v"].numpy()
    np.testing.assert_array_equal(v, engine(**inputs)["v"])
    bound["text"].free()
    with pytest.raises(ValueError, match="already freed"):
        engine.run_bound({"z": inputs["z"], **bound})
    engine.close()  # frees the tensors still held
    assert trt_standin.snapshot()["allocations"] == 0


def test_one_tensorrt_logger_for_builder_and_runtime(trt_folder, trt_standin):
    """Defect 13: TensorRT keeps the first logger it is given; the backend uses polygraphy's (the builder's)."""
    from jasco_runtime import JascoPipeline

    with JascoPipeline.from_dir(trt_folder, backend="tensorrt"):
        pass
    assert len(trt_standin.loggers) == 1
    assert not any("differs from one already provided" in e for e in trt_standin.errors)


def test_auto_backend_needs_tensorrt_cuda_python_and_a_gpu(trt_folder, trt_standin, monkeypatch, caplog):
    """Defect 13: ``auto`` picks TensorRT only when tensorrt and cuda-python import and a GPU answers; polygraphy
    is the builder's, not needed to run engines (review #16: no polygraphy libcudart lookup at run time)."""
    from jasco_runtime import JascoPipeline

    with JascoPipeline.from_dir(trt_folder) as pipe:
        assert pipe.backend == "tensorrt"
    trt_standin.set(cuda_error="cudaErrorNoDevice")
    with JascoPipeline.from_dir(trt_folder) as pipe:
        assert pipe.backend == "onnxruntime"
    assert "no CUDA device" in caplog.text
    trt_standin.set(cuda_error=None)
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    with JascoPipeline.from_dir(trt_folder) as pipe:
        assert pipe.backend == "tensorrt"
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with JascoPipeline.from_dir(trt_folder) as pipe:
        assert pipe.backend == "onnxruntime"


@pytest.mark.parametrize("field, value, message", [("trt_version", "10.3.0", r"TensorRT 10\.3\.0.*rebuild .*build-engines"),
                                                    ("compute_capability", "8.7", r"sm 8\.7.*rebuild")])
def test_engine_of_another_tensorrt_or_gpu_asks_for_a_rebuild(trt_folder, trt_standin, field, value, message):
    from jasco_runtime import JascoPipeline

    manifest = json.loads((trt_folder / "manifest.json").read_text())
    manifest["tensorrt"]["device"][field] = value
    (trt_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        JascoPipeline.from_dir(trt_folder, backend="tensorrt")
    assert trt_standin.snapshot()["allocations"] == 0


def test_plan_of_another_gpu_or_garbage_does_not_deserialize(trt_folder, trt_standin):
    """TensorRT's own check, when the manifest's record agrees (e.g. the folder was copied with its record)."""
    from jasco_runtime import JascoPipeline

    trt_standin.set(compute_capability=(8, 7))
    manifest = json.loads((trt_folder / "manifest.json").read_text())
    manifest["tensorrt"]["device"]["compute_capability"] = "8.7"
    (trt_folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="does not load with TensorRT.*build-engines"):
        JascoPipeline.from_dir(trt_folder, backend="tensorrt")
    assert any("incompatible device" in e for e in trt_standin.errors)
    trt_standin.set(compute_capability=(9, 0))
    manifest["tensorrt"]["device"]["compute_capability"] = "9.0"
    (trt_folder / "manifest.json").write_text(json.dumps(manifest))
    plan = trt_folder / "flow_step.fp16.plan"  # garbage of the recorded size: past the size check, to TensorRT's
    plan.write_bytes(b"\x00garbage plan".ljust(plan.stat().st_size, b"\x00"))
    with pytest.raises(InputError, match="does not load with TensorRT.*build-engines"):
        JascoPipeline.from_dir(trt_folder, backend="tensorrt")
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}  # engines opened before are closed


def test_unreadable_gpu_says_the_device_check_is_skipped(trt_folder, trt_standin, monkeypatch, caplog):
    """Defect 6: when the compute capability cannot be read the manifest check is skipped — with a warning.
    (Without cuda-python the backend does not run at all: it owns the device memory.)"""
    from standins.tensorrt import cudaError_t

    monkeypatch.setattr(sys.modules["cuda.bindings.runtime"], "cudaGetDeviceProperties",
                        lambda device: (cudaError_t.cudaErrorInvalidValue, None))
    engine = _engine(trt_folder, "text_encoder")
    assert "check is skipped" in caplog.text and "cudaGetDeviceProperties failed" in caplog.text
    engine.close()
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(InputError, match="TensorRT backend is not usable here: cuda-python is not installed"):
        _engine(trt_folder, "text_encoder")


def test_tensorrt_12_is_refused_and_polygraphy_is_not_needed_at_run_time(trt_folder, trt_standin, monkeypatch):
    """Review #17: TensorRT 10.13+ and 11.x run; 12 is refused with the install hint."""
    trt_standin.set(trt_version="12.0.0.1")
    with pytest.raises(InputError, match=r"TensorRT 12\.0\.0\.1 found; jasco-trt supports TensorRT 10\.x \(>= 10\.13\) "
                                         r"and 11\.x"):
        _engine(trt_folder, "text_encoder")
    trt_standin.set(trt_version={10: "10.13.3.9", 11: "11.4.0.106"}[trt_standin.api])
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    engine = _engine(trt_folder, "text_encoder")
    assert engine(input_ids=np.ones((1, 4), np.int64), attention_mask=np.ones((1, 4), np.int64))["text"].shape == (1, 4, 64)
    engine.close()


def test_device_traffic_is_counted_and_conditions_stay_on_the_device(trt_folder, trt_standin):
    """The device module counts what crosses the bus; the stand-in's device counts it independently.  With the
    conditions bound once (``to_device``), a flow-step call copies only z and t in and v out."""
    from jasco_runtime.tensorrt import device

    engine = _engine(trt_folder, "flow_step")
    inputs = _flow_inputs(2)
    bound = {k: engine.to_device(v) for k, v in inputs.items() if k not in ("z", "t")}
    device.reset_traffic()
    seen = dict(trt_standin.gpu.traffic)
    for _ in range(3):
        engine.run_bound({"z": inputs["z"], "t": inputs["t"], **bound})["v"].numpy()
    t = device.traffic()
    per_call_in, per_call_out = inputs["z"].nbytes + inputs["t"].nbytes, 2 * 500 * 128 * 4
    assert (t.h2d_bytes, t.h2d_copies, t.d2h_bytes, t.d2h_copies) == (3 * per_call_in, 6, 3 * per_call_out, 3)
    assert t.allocations == 0 and t.d2d_bytes == 0
    assert trt_standin.gpu.traffic["h2d_bytes"] - seen["h2d_bytes"] == t.h2d_bytes
    assert trt_standin.gpu.traffic["d2h_bytes"] - seen["d2h_bytes"] == t.d2h_bytes
    engine.close()
    assert device.traffic().frees == 3 + 6  # the 3 bound conditions, the 6 I/O buffers (5 in, 1 out)
    assert trt_standin.snapshot()["allocations"] == 0


def test_device_api_copies_round_trip_and_refuse_overruns(trt_standin):
    from jasco_runtime.errors import JascoError
    from jasco_runtime.tensorrt import device

    stream = device.create_stream()
    a, b = device.allocate(64), device.allocate(64)
    src = np.arange(16, dtype=np.float32)
    device.copy_host_to_device(a, src, stream)
    device.copy_device_to_device(b, a, src.nbytes, stream)
    out = device.copy_device_to_host(np.zeros(16, np.float32), b, stream)
    np.testing.assert_array_equal(out, src)
    assert a.ptr % 256 == 0 and b.ptr % 256 == 0
    with pytest.raises(ValueError, match="do not fit a 64-byte device buffer"):
        device.copy_host_to_device(a, np.zeros(17, np.float32), stream)
    with pytest.raises(ValueError, match="C-contiguous"):
        device.copy_host_to_device(a, np.zeros((4, 4), np.float32)[:, ::2], stream)
    a.free(), b.free(), a.free()  # idempotent
    with pytest.raises(JascoError, match="freed"):
        device.copy_host_to_device(a, src, stream)
    stream.close()
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}
    with pytest.raises(JascoError, match="out of device memory allocating"):
        device.allocate(trt_standin.config.total_memory + 1)


def test_close_releases_everything_after_a_sticky_fault(trt_folder, trt_standin):
    """Review #15: after a sticky CUDA error every free() fails; close() still releases every buffer, the
    stream and the engine, then raises the first error."""
    from jasco_runtime.errors import JascoError
    from standins.tensorrt import ILLEGAL_ADDRESS

    engine = _engine(trt_folder, "flow_step")
    engine.to_device(np.zeros((2, 7, 64), np.float32))
    trt_standin.gpu.sticky = ILLEGAL_ADDRESS
    with pytest.raises(JascoError, match="cudaFree .* failed: cudaErrorIllegalAddress"):
        engine.close()
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}
    assert engine.engine is None and engine.context is None
    engine.close()  # idempotent


def test_no_execution_context_and_no_cuda_are_one_line_errors(trt_folder, trt_standin, monkeypatch):
    """Review #13/#14: create_execution_context() returns None when device memory is short; trt.Runtime raises
    pybind11's "factory function returned nullptr" when TensorRT cannot start CUDA."""
    from standins import tensorrt as standin

    with monkeypatch.context() as m:
        m.setattr(standin.ICudaEngine, "create_execution_context", lambda self: None)
        with pytest.raises(InputError, match="could not create an execution context for flow_step .out of device memory"):
            _engine(trt_folder, "flow_step")
    assert trt_standin.snapshot()["allocations"] == 0
    trt_standin.set(cuda_error="cudaErrorInsufficientDriver")
    with pytest.raises(InputError, match=r"TensorRT could not start on this GPU \(TypeError: pybind11::init\(\): factory "
                                         r"function returned nullptr\).*driver >= 580"):
        _engine(trt_folder, "flow_step")


def test_missing_engines_name_the_fix(tiny_engines):
    from jasco_runtime import JascoPipeline

    with pytest.raises(InputError, match="no text_encoder fp16 tensorrt engine; build it on this machine with `jasco-run build-engines"):
        JascoPipeline.from_dir(tiny_engines.out, backend="tensorrt")


def test_engine_that_fails_the_io_check_frees_its_device_memory(trt_folder, trt_standin):
    """An engine swapped for another graph's is refused by check_io — and closed, not left holding its buffers."""
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    shutil.copy(trt_folder / "encodec_decoder.fp16.plan", trt_folder / "text_encoder.fp16.plan")
    # registered as it is now (past the digest check, which would name the file first): check_io's refusal
    ExportFolder.open(trt_folder, check_files=False).add_artifact(ArtifactKey("text_encoder", "fp16", "tensorrt"))
    with pytest.raises(InputError, match="not the text_encoder graph"):
        _engine(trt_folder, "text_encoder")
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}


def test_low_memory_tensorrt_pipeline_holds_one_engine_and_drops_it_on_close(trt_folder, trt_standin):
    """One stage at a time on the GPU: each encoder and the decoder alone, the flow step with its weightless
    solver_step (the ODE loop stays on the device with --low-memory too); a closed engine keeps no execution context
    or engine, and the result equals the pipeline holding every engine."""
    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends.tensorrt_backend import TensorRTEngine

    held = []
    real_execute, real_device = TensorRTEngine._execute, TensorRTEngine.run_device

    def execute(self, inputs):
        held.append((self.name, trt_standin.snapshot()["streams"]))
        return real_execute(self, inputs)

    def run_device(self, inputs, outputs, workspace):
        held.append((self.name, trt_standin.snapshot()["streams"]))
        return real_device(self, inputs, outputs, workspace)

    kw = dict(drums=np.random.default_rng(2).standard_normal(32000 * 3).astype(np.float32), drums_sample_rate=32000,
              **_kw())
    with JascoPipeline.from_dir(trt_folder, backend="tensorrt") as pipe:
        want = pipe.generate(PROMPTS, **kw)
    TensorRTEngine._execute, TensorRTEngine.run_device = execute, run_device
    try:
        with JascoPipeline.from_dir(trt_folder, backend="tensorrt", low_memory=True) as lean:
            got = lean.generate(PROMPTS, **kw)
            flow = lean.engines["flow_step"]  # opening it closes the decoder
            lean.engines["text_encoder"]
            assert flow.context is None and flow.engine is None
    finally:
        TensorRTEngine._execute, TensorRTEngine.run_device = real_execute, real_device
    assert got.ode_loop == "device"
    assert [n for n, _ in held] == ["text_encoder", "drums_encoder"] + ["flow_step", "solver_step"] * 3 + ["encodec_decoder"]
    assert [s for _, s in held] == [1, 1] + [2] * 6 + [1]  # the stage's engines (one stream each) alive at every call
    assert trt_standin.snapshot() == {"allocations": 0, "bytes": 0, "streams": 0}
    np.testing.assert_array_equal(got.latents, want.latents)
    np.testing.assert_array_equal(got.audio, want.audio)
