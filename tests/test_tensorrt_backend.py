"""The runtime's TensorRT backend, driven through a stand-in ``tensorrt`` / ``polygraphy.cuda``.

TensorRT cannot be installed here, so a small stand-in of the TensorRT 10 runtime API executes each
"plan" with ONNX Runtime on the graph the plan names, and a numpy-backed ``DeviceArray`` stands in for
GPU memory. This checks the backend's control flow (named I/O, shapes, device-resident conditions,
buffer reuse, rebuild messages) and that the pipeline gives the ONNX Runtime result through it. Real
TensorRT numerics are not checked here (tests/test_tensorrt_build.py::test_tiny_engine_matches_onnxruntime
does that where TensorRT and a GPU exist).
"""
from __future__ import annotations

import enum
import json
import shutil
import sys
import types

import numpy as np
import pytest

from jasco_runtime.errors import InputError

TRT_VERSION = "10.99.1"


class DeviceArray:
    """numpy-backed stand-in of polygraphy.cuda.DeviceArray; counts host→device copies."""

    copies = 0

    def __init__(self, shape=(), dtype=np.float32):
        self.array = np.empty(shape, dtype=dtype)
        self.ptr = id(self)

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def resize(self, shape):
        if tuple(shape) != self.array.shape:
            self.array = np.empty(shape, dtype=self.array.dtype)

    def copy_from(self, host, stream=None):
        DeviceArray.copies += 1
        self.array = np.array(host, copy=True)

    def copy_to(self, host, stream=None):
        host[...] = self.array
        return host


def _stand_ins(folder):
    import onnxruntime as ort

    cuda = types.ModuleType("polygraphy.cuda")
    cuda.DeviceArray = DeviceArray
    cuda.Stream = type("Stream", (), {"ptr": 0, "synchronize": lambda self: None})
    polygraphy = types.ModuleType("polygraphy")
    polygraphy.cuda = cuda

    trt = types.ModuleType("tensorrt")
    trt.__version__ = TRT_VERSION
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    trt.Logger = type("Logger", (), {"ERROR": 1, "__init__": lambda self, level=None: None})
    trt.nptype = lambda dtype: dtype

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def get_tensor_shape(self, name):
            feeds = {n: np.zeros(s, self.engine.dtypes[n]) for n, s in self.shapes.items()}
            self.pending = self.engine.session.run(None, feeds)  # shape inference by running (stand-in)
            return self.pending[self.engine.outputs.index(name)].shape

        def execute_async_v3(self, stream):
            objects = {o.ptr: o for o in DeviceArray.live}
            feeds = {n: objects[self.addresses[n]].array for n in self.engine.inputs}
            for name, value in zip(self.engine.outputs, self.engine.session.run(None, feeds)):
                objects[self.addresses[name]].array[...] = value
            return True

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            types_ = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
            self.dtypes = {i.name: types_[i.type] for i in self.session.get_inputs()}
            self.dtypes.update({o.name: types_[o.type] for o in self.session.get_outputs()})
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.dtypes[name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            plan = json.loads(data.decode()) if data.startswith(b"{") else {}
            if plan.get("trt") != TRT_VERSION:
                return None  # what TensorRT does with a plan of another version
            return Engine(folder / plan["onnx"])

    trt.Runtime = Runtime
    return trt, polygraphy, cuda


@pytest.fixture()
def trt_engines(tiny_engines, tmp_path, monkeypatch):
    """A copy of the tiny export with a stand-in 'plan' per graph and the build device recorded."""
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, folder)
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    ef = ExportFolder.open(folder)
    for name in ef.graphs:
        key = ef.resolve(name, "tensorrt", "fp16")
        (folder / key.default_file).write_text(json.dumps({"trt": TRT_VERSION, "onnx": ef.artifact(ArtifactKey(name, "fp32", "onnx")).file}))
        ef.add_artifact(key, save=False)
    ef.set_record("tensorrt", {**ef.raw["tensorrt"], "device": {"trt_version": TRT_VERSION, "gpu_name": "Stand-in GPU",
                                                                "compute_capability": "9.0"}})
    trt, polygraphy, cuda = _stand_ins(folder)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "polygraphy", polygraphy)
    monkeypatch.setitem(sys.modules, "polygraphy.cuda", cuda)
    DeviceArray.live = []
    original_init = DeviceArray.__init__

    def tracked_init(self, *a, **k):
        original_init(self, *a, **k)
        DeviceArray.live.append(self)

    monkeypatch.setattr(DeviceArray, "__init__", tracked_init)
    from jasco_runtime.backends import tensorrt_backend

    monkeypatch.setattr(tensorrt_backend, "_current_gpu", lambda: ("Stand-in GPU", "9.0"))
    return folder


def test_pipeline_through_tensorrt_backend_matches_onnxruntime(trt_engines):
    from jasco_runtime import JascoPipeline

    kw = dict(chords="C:0 F:4", cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=3, progress=False,
              init_noise=np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32))
    trt_pipe = JascoPipeline.from_dir(trt_engines, backend="tensorrt")
    assert trt_pipe.backend == "tensorrt"
    DeviceArray.copies = 0
    got = trt_pipe.generate(["funk", "a much longer piano ballad prompt"], **kw)
    copies = DeviceArray.copies
    ref = JascoPipeline.from_dir(trt_engines, backend="onnxruntime", providers=["cpu"]).generate(
        ["funk", "a much longer piano ballad prompt"], **kw)
    np.testing.assert_allclose(got.latents, ref.latents, atol=1e-6)
    np.testing.assert_allclose(got.audio, ref.audio, atol=1e-6)
    # conditions go to the device once: per flow evaluation only z and t are copied (2 × 3 steps),
    # plus the text encoder (2 inputs), the conditions (text, chords, drums: 3) and the decoder (1)
    assert copies == 2 * 3 + 2 + 3 + 1


def test_auto_backend_picks_tensorrt_when_engines_exist(trt_engines):
    from jasco_runtime import JascoPipeline

    assert JascoPipeline.from_dir(trt_engines).backend == "tensorrt"


@pytest.mark.parametrize("field, value, message", [("trt_version", "10.3.0", r"TensorRT 10\.3\.0.*rebuild .*jasco-export"),
                                                    ("compute_capability", "8.7", r"sm 8\.7.*rebuild")])
def test_engine_of_another_tensorrt_or_gpu_asks_for_a_rebuild(trt_engines, field, value, message):
    from jasco_runtime import JascoPipeline

    manifest = json.loads((trt_engines / "manifest.json").read_text())
    manifest["tensorrt"]["device"][field] = value
    (trt_engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        JascoPipeline.from_dir(trt_engines, backend="tensorrt")


def test_plan_that_does_not_deserialize_asks_for_a_rebuild(trt_engines):
    from jasco_runtime import JascoPipeline

    (trt_engines / "flow_step.fp16.plan").write_bytes(b"\x00garbage plan")
    with pytest.raises(InputError, match="does not load with TensorRT.*rebuild"):
        JascoPipeline.from_dir(trt_engines, backend="tensorrt")


def test_missing_engines_name_the_fix(tiny_engines):
    from jasco_runtime import JascoPipeline

    with pytest.raises(InputError, match="no text_encoder fp16 tensorrt engine; build it on this machine with `jasco-run build-engines"):
        JascoPipeline.from_dir(tiny_engines.out, backend="tensorrt")
