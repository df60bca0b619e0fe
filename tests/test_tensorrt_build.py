"""TensorRT side of the export without TensorRT: operator table, compatibility check, engine-build flow
(against a stub ``tensorrt`` module), cache keys.  The one real engine build is a ``gpu`` test."""
from __future__ import annotations

import enum
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from jasco_export.tensorrt import build as tb
from jasco_export.errors import InputError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _export(module, args, path: Path, names_in, names_out, dynamic_axes) -> Path:
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return path


def _model(nodes, inputs, outputs, path: Path, opset=17, initializers=(), functions=(), extra_opsets=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _has(items, *needles):
    return any(all(n in p for n in needles) for p in items)


# ------------------------------------------------------------------------------------------------
# the operator table
# ------------------------------------------------------------------------------------------------

def test_op_table_is_data_with_source():
    t = tb.load_op_table(10)
    assert t["trt_major"] == 10
    assert "github.com/onnx/onnx-tensorrt" in t["source"]["url"] and t["source"]["path"] == "docs/operators.md"
    assert t["source"]["cross_check"]["commit"] == "96e781103cfc4adf4a6bb557e94bac8e693f6f4c"
    ops = t["ops"]
    assert len(ops) >= 190
    for op in ("Add", "MatMul", "LayerNormalization", "LSTM", "Pad", "ArgMax", "Gather", "Softmax", "Resize"):
        assert ops[op]["supported"], op
    assert ops["LayerNormalization"]["dtypes"] == ["float32", "float16", "bfloat16"]
    assert "int64" in ops["Gather"]["dtypes"] and "int64" in ops["Add"]["dtypes"]  # TRT 10 has INT64
    assert "int64" not in ops["MatMul"]["dtypes"]
    assert "input_forget" in ops["LSTM"]["notes"]
    for op in ("Unique", "Col2Im", "Det", "StringNormalizer", "SequenceAt"):
        assert not ops[op]["supported"], op
    known = set(t["supported_dtypes"]) | set(t["io_only_dtypes"]) | set(t["quantized_dtypes"])
    assert all(set(v["dtypes"]) <= known for v in ops.values())
    assert "float64" in t["unsupported_dtypes"] and "string" in t["unsupported_dtypes"]
    assert not set(t["unsupported_dtypes"]) & known
    assert t["opset_range"][0] == 9
    with pytest.raises(InputError):
        tb.load_op_table(8)


# ------------------------------------------------------------------------------------------------
# graphs that TensorRT 10 takes
# ------------------------------------------------------------------------------------------------

def _torch_cases():
    import torch
    import torch.nn.functional as F

    class LinNormSoftmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 32)
            self.norm = torch.nn.LayerNorm(32)

        def forward(self, x):
            return torch.softmax(self.norm(self.lin(x)), dim=-1)

    class Lstm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(8, 12, num_layers=1, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.rnn(x)[0]

    class ReflectPad(torch.nn.Module):
        def forward(self, x):
            return F.pad(x, (3, 3), mode="reflect") * 2.0

    class ArgmaxGather(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(10, 4))

        def forward(self, x):
            idx = torch.argmax(x, dim=-1)
            return self.table[idx]

    return {
        "linear_layernorm_softmax": (LinNormSoftmax(), torch.randn(2, 5, 16), {"x": {0: "batch", 1: "seq"}},
                                     {"x": {"batch": (1, 2, 4), "seq": (1, 16, 64)}}, [{"x": (1, 1, 16)}, {"x": (4, 64, 16)}],
                                     {"MatMul", "LayerNormalization", "Softmax"}),
        "lstm": (Lstm(), torch.randn(2, 7, 8), {"x": {0: "batch", 1: "time"}},
                 {"x": ((1, 1, 8), (2, 50, 8), (4, 200, 8))}, [{"x": (3, 120, 8)}], {"LSTM"}),
        "reflect_pad": (ReflectPad(), torch.randn(1, 2, 40), {"x": {2: "t"}},
                        {"x": {2: (8, 40, 400)}}, [{"x": (1, 2, 8)}, {"x": (1, 2, 400)}], {"Pad"}),
        "argmax_gather": (ArgmaxGather(), torch.randn(3, 10), {"x": {0: "n"}},
                          {"x": {"n": (1, 3, 16)}}, [{"x": (16, 10)}], {"ArgMax", "Gather"}),
    }


@pytest.mark.parametrize("case", ["linear_layernorm_softmax", "lstm", "reflect_pad", "argmax_gather"])
def test_torch_exports_pass(case, tmp_path):
    module, x, dyn, profiles, runtime, expect_ops = _torch_cases()[case]
    path = _export(module, (x,), tmp_path / f"{case}.onnx", ["x"], ["y"], {**dyn, "y": {}})
    rep = tb.check_trt_compatibility(path, profiles=profiles, runtime_shapes=runtime)
    assert rep.ok, rep.problems
    assert rep.problems == []
    assert expect_ops <= set(rep.ops), rep.ops
    assert rep.opset == 17
    d = rep.to_dict()
    assert d["ok"] is True and d["ops"] == rep.ops and "TensorRT 10" in d["table"]
    json.dumps(d)


def test_fp16_mixed_export_passes(tmp_path):
    """The fp16 conversion the exporter uses (fp32 I/O, Cast islands) stays TensorRT-compatible."""
    from jasco_export.graphs.onnx_export import convert_fp16

    module, x, dyn, profiles, runtime, _ = _torch_cases()["linear_layernorm_softmax"]
    src = _export(module, (x,), tmp_path / "m.onnx", ["x"], ["y"], {**dyn, "y": {}})
    info = convert_fp16(src, tmp_path / "m16.onnx")
    assert "Softmax" in info["fp32_op_types"]
    rep = tb.check_trt_compatibility(tmp_path / "m16.onnx", profiles=profiles, runtime_shapes=runtime)
    assert rep.ok, rep.problems
    assert "Cast" in rep.ops


# ------------------------------------------------------------------------------------------------
# graphs that TensorRT 10 rejects
# ------------------------------------------------------------------------------------------------

def test_unsupported_op(tmp_path):
    p = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [None])], tmp_path / "u.onnx")
    rep = tb.check_trt_compatibility(p)
    assert not rep.ok and _has(rep.problems, "Unique", "not supported")
    assert rep.ops == {"Unique": 1}


def test_op_missing_from_table(tmp_path):
    p = _model([helper.make_node("TotallyNewOp", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "n.onnx")
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, "TotallyNewOp", "operator table")
    assert tb.check_trt_compatibility(p, plugins=["TotallyNewOp"]).ok


def test_float64_tensor(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["x64", "x64"], ["sq"]),
             helper.make_node("Cast", ["sq"], ["y"], to=TensorProto.FLOAT)]
    p = _model(nodes, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "d.onnx")
    rep = tb.check_trt_compatibility(p)
    assert not rep.ok and _has(rep.problems, "float64", "x64")


def test_float64_input(tmp_path):
    p = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.DOUBLE, [4])],
               [_vi("y", TensorProto.DOUBLE, [4])], tmp_path / "d2.onnx")
    assert _has(tb.check_trt_compatibility(p).problems, "float64")


@pytest.mark.parametrize("elem,name", [(TensorProto.STRING, "string"), (TensorProto.COMPLEX64, "complex64"),
                                       (TensorProto.UINT16, "uint16")])
def test_types_tensorrt_lacks(elem, name, tmp_path):
    p = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", elem, [4])], [_vi("y", elem, [4])],
               tmp_path / f"{name}.onnx")
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, name, "no such tensor type")


def test_int64_is_fine_where_documented_but_not_for_matmul(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "b"], ["y"], name="mm")]
    p = _model(nodes, [_vi("a", TensorProto.INT64, [2, 2]), _vi("b", TensorProto.INT64, [2, 2])],
               [_vi("y", TensorProto.INT64, [2, 2])], tmp_path / "i64.onnx")
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, "MatMul", "int64", "rejected")
    assert not _has(rep.problems, "Add")
    assert not _has(rep.problems, "int64 tensor")


def test_uint8_only_at_io(tmp_path):
    ok = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [_vi("x", TensorProto.UINT8, [4])],
                [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "u8io.onnx")
    assert tb.check_trt_compatibility(ok).ok
    nodes = [helper.make_node("Cast", ["x"], ["mid"], to=TensorProto.UINT8),
             helper.make_node("Cast", ["mid"], ["y"], to=TensorProto.FLOAT)]
    bad = _model(nodes, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "u8.onnx")
    assert _has(tb.check_trt_compatibility(bad).problems, "uint8", "mid")


def test_int8_outside_qdq(tmp_path):
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    p = _model(qdq, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "qdq.onnx",
               initializers=[scale, zp])
    assert tb.check_trt_compatibility(p).ok
    zp1 = helper.make_tensor("z", TensorProto.INT8, [], [3])
    p = _model(qdq, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "qdq1.onnx",
               initializers=[scale, zp1])
    assert _has(tb.check_trt_compatibility(p).problems, "zero point")
    nodes = [helper.make_node("Cast", ["x"], ["i8"], to=TensorProto.INT8),
             helper.make_node("Cast", ["i8"], ["y"], to=TensorProto.FLOAT)]
    p = _model(nodes, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "i8.onnx")
    assert _has(tb.check_trt_compatibility(p).problems, "int8", "quantization")


def test_custom_domain(tmp_path):
    node = helper.make_node("FancyAttention", ["x"], ["y"], domain="com.example", name="fa")
    p = _model([node], [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "c.onnx",
               extra_opsets=[("com.example", 1)])
    rep = tb.check_trt_compatibility(p)
    assert not rep.ok and _has(rep.problems, "com.example", "FancyAttention", "plugin")
    assert rep.ops == {"com.example:FancyAttention": 1}
    rep = tb.check_trt_compatibility(p, plugins={"FancyAttention"})
    assert rep.ok and _has(rep.warnings, "plugin")


def test_local_function_is_checked_inside(tmp_path):
    def fn(body_op):
        return helper.make_function("local.fn", "Block", ["a"], ["b"],
                                    [helper.make_node("Relu", ["a"], ["t"]), helper.make_node(body_op, ["t"], ["b"])],
                                    [helper.make_opsetid("", 17)])

    node = helper.make_node("Block", ["x"], ["y"], domain="local.fn")
    io = ([_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [None])])
    good = _model([node], *io, tmp_path / "f_ok.onnx", functions=[fn("Sigmoid")], extra_opsets=[("local.fn", 1)])
    rep = tb.check_trt_compatibility(good)
    assert rep.ok, rep.problems
    assert rep.ops["Relu"] == 1 and rep.ops["Sigmoid"] == 1
    bad = _model([node], *io, tmp_path / "f_bad.onnx", functions=[fn("Unique")], extra_opsets=[("local.fn", 1)])
    assert _has(tb.check_trt_compatibility(bad).problems, "Unique", "function local.fn:Block")


def test_subgraph_is_checked(tmp_path):
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [], [_vi("t", TensorProto.FLOAT, [None])])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [_vi("e", TensorProto.FLOAT, [4])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")
    p = _model([node], [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [None])], tmp_path / "if.onnx")
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, "Unique", "then_branch")
    assert rep.ops["If"] == 1 and rep.ops["Relu"] == 1


def test_opset_range(tmp_path):
    p = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "o.onnx", opset=7)
    assert _has(tb.check_trt_compatibility(p).problems, "opset 7")


@pytest.mark.parametrize("node,needle", [
    (helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=3, layout=1), "layout"),
    (helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=3, input_forget=1), "input_forget"),
    (helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=3, direction="bidirectional",
                      activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"]), "same activations"),
    (helper.make_node("Resize", ["x", "", "sc"], ["y"], coordinate_transformation_mode="tf_crop_and_resize"),
     "coordinate_transformation_mode"),
    (helper.make_node("Resize", ["x", "", "sc"], ["y"], antialias=1, mode="linear"), "antialias"),
    (helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2]), "Indices"),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
    (helper.make_node("TopK", ["x", "k"], ["y", "i"], sorted=0), "sorted=0"),
    (helper.make_node("ScatterND", ["x", "k", "x"], ["y"], reduction="add"), "reduction"),
    (helper.make_node("LayerNormalization", ["x", "sc"], ["y", "mean"]), "first LayerNormalization output"),
    (helper.make_node("ReduceSum", ["x", "dyn_axes"], ["y"]), "'axes' must be an initializer"),
])
def test_op_restrictions(node, needle, tmp_path):
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [1, 12, 4], np.zeros(48).tolist()),
             helper.make_tensor("r", TensorProto.FLOAT, [1, 12, 3], np.zeros(36).tolist()),
             helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
             helper.make_tensor("k", TensorProto.INT64, [1], [2])]
    p = _model([node], [_vi("x", TensorProto.FLOAT, [1, 1, 4, 4]), _vi("dyn_axes", TensorProto.INT64, [1])],
               [_vi("y", TensorProto.FLOAT, None)], tmp_path / "r.onnx", opset=18, initializers=inits)
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, needle), rep.problems


def test_cubic_resize_is_a_warning_and_argmax_last_index_is_fine(tmp_path):
    sc = helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["r"], mode="cubic"),
             helper.make_node("ArgMax", ["r"], ["y"], axis=-1, select_last_index=1)]
    p = _model(nodes, [_vi("x", TensorProto.FLOAT, [1, 1, 4, 4])], [_vi("y", TensorProto.INT64, None)],
               tmp_path / "w.onnx", initializers=[sc])
    rep = tb.check_trt_compatibility(p)
    assert rep.ok, rep.problems
    assert _has(rep.warnings, "cubic")


# ------------------------------------------------------------------------------------------------
# optimisation profiles vs runtime shapes
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dyn_linear(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("prof") / "lin.onnx"
    return _export(torch.nn.Linear(16, 8), (torch.randn(2, 16),), path, ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})


def test_profile_must_cover_runtime_shapes(dyn_linear):
    rep = tb.check_trt_compatibility(dyn_linear, profiles={"x": {"batch": (1, 2, 4)}},
                                     runtime_shapes=[{"x": (2, 16)}, {"x": (8, 16)}])
    assert not rep.ok
    assert _has(rep.problems, "runtime shape #1", "(8, 16)", "outside")
    assert not _has(rep.problems, "runtime shape #0")


def test_profile_min_gt_opt(dyn_linear):
    rep = tb.check_trt_compatibility(dyn_linear, profiles={"x": ((4, 16), (2, 16), (8, 16))})
    assert _has(rep.problems, "min <= opt <= max", "4, 2, 8")


@pytest.mark.parametrize("profiles,needle", [
    ({"x": ((1, 8), (2, 8), (4, 8))}, "static"),                   # static axis changed
    ({"x": ((1, 16, 1), (2, 16, 1), (4, 16, 1))}, "rank"),         # wrong rank
    ({"x": {"seq": (1, 2, 3)}}, "no (min, opt, max) for dynamic axis 0"),
    ({"nope": ((1, 16), (1, 16), (1, 16))}, "not an input"),
    ({}, "no optimisation profile"),
])
def test_profile_shape_errors(dyn_linear, profiles, needle):
    rep = tb.check_trt_compatibility(dyn_linear, profiles=profiles)
    assert _has(rep.problems, needle), rep.problems


def test_runtime_shape_rank_and_static_dims(dyn_linear):
    rep = tb.check_trt_compatibility(dyn_linear, profiles={"x": {0: (1, 1, 4)}},
                                     runtime_shapes=[{"x": (2, 15)}, {"x": (2, 16, 1)}])
    assert _has(rep.problems, "#0", "static") and _has(rep.problems, "#1", "rank")


# ------------------------------------------------------------------------------------------------
# engine building
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_TRT, reason="tensorrt is importable here")
def test_build_engine_without_tensorrt(dyn_linear, tmp_path):
    with pytest.raises(tb.TensorRTUnavailable) as err:
        tb.build_engine(dyn_linear, tmp_path / "lin.plan", {"x": {"batch": (1, 2, 4)}}, tmp_path / "timing.cache")
    msg = str(err.value)
    assert "TensorRT is not installed" in msg and "\n" not in msg and err.value.reason == msg
    assert not (tmp_path / "lin.plan").exists()


def _stub_tensorrt(record):
    """Just enough of the TensorRT 10 Python API to run build_engine's control flow."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.1"

    class Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NDCF", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.IntEnum("MPT", {"WORKSPACE": 0})
    trt.BuilderFlag = enum.IntEnum("BF", {"FP16": 0})
    trt.DataType = enum.IntEnum("DT", {"FLOAT": 0, "HALF": 1, "INT64": 2})

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype, self.is_shape_tensor = name, shape, dtype, False

    class Network:
        def __init__(self, flags):
            record["network_flags"] = flags
            self.inputs, self.num_layers = [], 0

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            record["parsed"] = path
            m = onnx.load(path)
            for vi in m.graph.input:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
                dt = trt.DataType.HALF if vi.type.tensor_type.elem_type == TensorProto.FLOAT16 else trt.DataType.FLOAT
                self.network.inputs.append(Tensor(vi.name, dims, dt))
            return True

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+run"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.cache = [], [], None

        def set_memory_pool_limit(self, pool, size):
            record["workspace"] = size

        def set_flag(self, flag):
            self.flags.append(flag)
            record["builder_flags"] = self.flags

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def create_timing_cache(self, data):
            record.setdefault("cache_inputs", []).append(bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, op, mx):
            self.shapes[name] = (tuple(mn), tuple(op), tuple(mx))

    class Builder:
        def __init__(self, logger):
            logger.log(Severity.WARNING, "stub builder")

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record["profiles"] = [p.shapes for p in config.profiles]
            return b"PLAN" + json.dumps(record["profiles"]).encode()

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def test_build_engine_flow_with_stub_tensorrt(dyn_linear, tmp_path, monkeypatch):
    record = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _stub_tensorrt(record))
    monkeypatch.setattr(tb, "_LOGGER", None)
    monkeypatch.setattr(tb, "_cuda_device_count", lambda: None)
    logs = []
    plan, cache = tmp_path / "out" / "lin.plan", tmp_path / "timing.cache"
    info = tb.build_engine(dyn_linear, plan, {"x": {"batch": (1, 2, 4)}}, cache, workspace_gb=1, log=logs.append)
    assert plan.read_bytes().startswith(b"PLAN")
    assert record["profiles"] == [{"x": ((1, 16), (2, 16), (4, 16))}]
    assert record["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert "builder_flags" not in record  # no deprecated FP16 flag in strongly typed mode
    assert record["workspace"] == 1 << 30
    assert record["parsed"] == str(dyn_linear)
    assert cache.read_bytes() == b"+run" and record["cache_inputs"] == [b""]
    assert info["profile"] == {"x": [[1, 16], [2, 16], [4, 16]]} and not info["timing_cache_loaded"]
    assert _has(logs, "no float16 tensors") and _has(logs, "stub builder")
    assert not list(plan.parent.glob(".*tmp*"))
    # second build: the timing cache is loaded and extended
    info = tb.build_engine(dyn_linear, plan, {"x": ((1, 16), (2, 16), (4, 16))}, cache, log=logs.append)
    assert record["cache_inputs"][-1] == b"+run" and info["timing_cache_loaded"]
    assert cache.read_bytes() == b"+run+run"
    # weakly typed + fp16 sets the (deprecated) flag
    tb.build_engine(dyn_linear, plan, {"x": {"batch": (1, 2, 4)}}, None, strongly_typed=False, log=logs.append)
    assert record["network_flags"] == 0 and record["builder_flags"] == [0]
    # bad profiles are an InputError before anything is built
    with pytest.raises(InputError, match="no profile"):
        tb.build_engine(dyn_linear, plan, {}, None, log=logs.append)
    with pytest.raises(InputError, match="min <= opt <= max"):
        tb.build_engine(dyn_linear, plan, {"x": {"batch": (4, 2, 8)}}, None, log=logs.append)


def test_old_tensorrt_is_unavailable(monkeypatch, tmp_path, dyn_linear):
    old = types.ModuleType("tensorrt")
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(tb.TensorRTUnavailable, match="8.6.1"):
        tb.build_engine(dyn_linear, tmp_path / "x.plan", {"x": {"batch": (1, 2, 4)}})


# ------------------------------------------------------------------------------------------------
# cache key, hashes, device info
# ------------------------------------------------------------------------------------------------

def test_engine_cache_key():
    base = dict(onnx_sha256="ab" * 32, precision="fp16", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                trt_version="10.9.0.34")
    key = tb.engine_cache_key(**base)
    assert key == tb.engine_cache_key(**base)
    assert tb.engine_cache_key(**{**base, "compute_capability": (9, 0)}) == key
    assert tb.engine_cache_key(**{**base, "compute_capability": "sm_90"}) == key
    assert "sm90" in key and "fp16" in key and "trt10.9.0.34" in key
    assert all(c.isalnum() or c in "-." for c in key)
    changed = {"onnx_sha256": "cd" * 32, "precision": "fp32", "gpu_name": "NVIDIA L4", "compute_capability": "8.9",
               "trt_version": "10.9.1.0"}
    keys = {tb.engine_cache_key(**{**base, k: v}) for k, v in changed.items()}
    assert len(keys) == len(changed) and key not in keys
    with pytest.raises(InputError):
        tb.engine_cache_key(**{**base, "onnx_sha256": "not-a-digest"})
    with pytest.raises(InputError):
        tb.engine_cache_key(**{**base, "gpu_name": " "})


def test_onnx_sha256_covers_external_data(tmp_path):
    w = onnx.numpy_helper.from_array(np.arange(256, dtype=np.float32), "w")
    p = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", TensorProto.FLOAT, [256])],
               [_vi("y", TensorProto.FLOAT, [256])], tmp_path / "e.onnx", initializers=[w])
    m = onnx.load(str(p))
    onnx.save(m, str(p), save_as_external_data=True, location="e.onnx.data", size_threshold=0)
    h1 = tb.onnx_sha256(p)
    data = bytearray((tmp_path / "e.onnx.data").read_bytes())
    data[0] ^= 1
    (tmp_path / "e.onnx.data").write_bytes(bytes(data))
    assert tb.onnx_sha256(p) != h1
    assert tb.check_trt_compatibility(p).ok  # external data is not loaded for the check


def test_device_info_is_a_dict():
    info = tb.device_info()
    assert isinstance(info, dict)
    if not HAS_TRT and importlib.util.find_spec("cuda") is None and not __import__("shutil").which("nvidia-smi"):
        assert info == {}


# ------------------------------------------------------------------------------------------------
# real TensorRT (GPU machines only)
# ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT not installed")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tiny_engine_matches_onnxruntime(precision, tmp_path):
    import onnxruntime as ort
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    module, x, dyn, profiles, runtime, _ = _torch_cases()["linear_layernorm_softmax"]
    src = _export(module, (x,), tmp_path / "m.onnx", ["x"], ["y"], {**dyn, "y": {0: "batch", 1: "seq"}})
    if precision == "fp16":
        from onnxconverter_common import float16

        onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(tmp_path / "m16.onnx"))
        src = tmp_path / "m16.onnx"
    rep = tb.check_trt_compatibility(src, profiles=profiles, runtime_shapes=runtime)
    assert rep.ok, rep.problems
    try:
        info = tb.build_engine(src, tmp_path / "m.plan", profiles, tmp_path / "timing.cache", fp16=precision == "fp16")
    except tb.TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    assert info["strongly_typed"] and (tmp_path / "timing.cache").stat().st_size > 0
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    with TrtRunner(EngineFromBytes((tmp_path / "m.plan").read_bytes())) as runner:
        for shapes in runtime:
            feed = {"x": rng.standard_normal(shapes["x"]).astype(np.float32)}
            got = np.asarray(runner.infer(feed)["y"], dtype=np.float32)
            ref = sess.run(["y"], feed)[0]
            tol = 5e-3  # fp16 engine; for fp32 TensorRT enables TF32 matmuls by default
            np.testing.assert_allclose(got, ref, atol=tol, rtol=tol)
    dev = tb.device_info()
    assert dev.get("trt_version")
    if dev.get("gpu_name") and dev.get("compute_capability"):
        key = tb.engine_cache_key(tb.onnx_sha256(src), precision, dev["gpu_name"], dev["compute_capability"],
                                  dev["trt_version"])
        assert key.startswith(tb.onnx_sha256(src)[:12])


def test_cast_to_int16_is_reported(tmp_path):
    """The int64 -> int16 -> int64 code round trip (audiocraft) is a Cast TensorRT cannot parse."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=-1),
             helper.make_node("Cast", ["a"], ["a16"], to=TensorProto.INT16),
             helper.make_node("Cast", ["a16"], ["codes"], to=TensorProto.INT64)]
    p = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 8])], [_vi("codes", TensorProto.INT64, [2, 1])],
               tmp_path / "i16.onnx")
    rep = tb.check_trt_compatibility(p)
    assert _has(rep.problems, "int16", "a16", "int32")


def test_ops_newer_than_10_1_warn(tmp_path):
    sc = onnx.numpy_helper.from_array(np.ones(4, np.float32), "sc")
    p = _model([helper.make_node("RMSNormalization", ["x", "sc"], ["y"])], [_vi("x", TensorProto.FLOAT, [2, 4])],
               [_vi("y", TensorProto.FLOAT, [2, 4])], tmp_path / "rms.onnx", opset=23, initializers=[sc])
    rep = tb.check_trt_compatibility(p)
    assert rep.ok, rep.problems
    assert _has(rep.warnings, "RMSNormalization", "10.1") and _has(rep.warnings, "opset 23")
