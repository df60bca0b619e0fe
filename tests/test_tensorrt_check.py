"""The TensorRT-free compatibility check of the exported graphs (ops, dtypes, profiles vs runtime shapes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from jasco_export.tensorrt.check import check_trt_compatibility, load_op_table

# Every op the exported JASCO graphs use (fp32 and mixed-fp16, every runtime graph).  A new op fails this
# pin on purpose: review it against TensorRT's operator table and the TensorRT build before adding it.
JASCO_OPS = {
    "text_encoder": {"Abs", "Add", "And", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Expand",
                     "Flatten", "Gather", "Greater", "GreaterOrEqual", "Less", "Log", "MatMul", "Min", "Mul", "Pow",
                     "Range", "ReduceMean", "Relu", "Reshape", "Shape", "Softmax", "Sqrt", "Sub", "Transpose",
                     "Unsqueeze", "Where"},
    "drums_encoder": {"Add", "ArgMax", "Cast", "Ceil", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Elu",
                      "Expand", "Gather", "Identity", "LSTM", "MatMul", "Mod", "Mul", "Neg", "Pad", "Pow", "ReduceSum",
                      "Reshape", "Shape", "Slice", "Split", "Squeeze", "Sub", "Tile", "Transpose", "Unsqueeze"},
    "flow_step": {"Add", "Cast", "Concat", "Constant", "Cos", "Div", "Erf", "Gather", "Gemm", "LayerNormalization",
                  "MatMul", "Mul", "Pow", "Range", "Reshape", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Sqrt",
                  "Sub", "Transpose", "Unsqueeze"},
    "encodec_decoder": {"Add", "Cast", "Ceil", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div",
                        "Elu", "Gather", "Identity", "LSTM", "Mul", "Pad", "Reshape", "Shape", "Slice", "Squeeze", "Sub",
                        "Transpose", "Unsqueeze"},
}


def test_the_exported_graphs_use_exactly_the_reviewed_ops(tiny_engines):
    from jasco_runtime.export_folder import ExportFolder

    folder = ExportFolder.open(tiny_engines.out)
    table = load_op_table()["ops"]
    for name, expected in JASCO_OPS.items():
        for a in folder.artifacts():
            if a.key.graph != name or a.key.backend != "onnx" or a.key.precision == "int8":
                continue
            model = onnx.load(str(folder.path(a.key)), load_external_data=False)
            ops = {n.op_type for n in model.graph.node}
            assert ops == expected, f"{a.key}: new {sorted(ops - expected)}, gone {sorted(expected - ops)}"
            assert all(table[op]["supported"] for op in ops)
            assert not any(a.type in (a.GRAPH, a.GRAPHS) for n in model.graph.node for a in n.attribute)  # no subgraphs
            assert not model.functions
    for name, report in folder.tensorrt.compatibility.items():
        assert report.ok, (name, report.problems)


def _model(nodes, inputs, outputs, path: Path, opset=17, initializers=(), extra_opsets=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _has(items, *needles):
    return any(all(n in p for n in needles) for p in items)


def test_fp16_mixed_export_passes(tmp_path):
    """The fp16 conversion the exporter uses (fp32 I/O, Cast islands) stays TensorRT-compatible."""
    import torch

    from jasco_export.graphs.onnx_export import convert_fp16

    class LinNormSoftmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.norm = torch.nn.Linear(16, 32), torch.nn.LayerNorm(32)

        def forward(self, x):
            return torch.softmax(self.norm(self.lin(x)), dim=-1)

    src = tmp_path / "m.onnx"
    torch.onnx.export(LinNormSoftmax().eval(), (torch.randn(2, 5, 16),), str(src), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "seq"}}, opset_version=17, dynamo=False)
    convert_fp16(src, tmp_path / "m16.onnx")
    profiles = {"x": ((1, 1, 16), (2, 16, 16), (4, 64, 16))}
    rep = check_trt_compatibility(tmp_path / "m16.onnx", profiles=profiles, runtime_shapes=[{"x": (1, 1, 16)}, {"x": (4, 64, 16)}])
    assert rep.ok, rep.problems
    assert {"Cast", "LayerNormalization", "Softmax", "MatMul"} <= set(rep.ops) and rep.opset == 17


def test_cast_to_int16_is_reported(tmp_path):
    """The int64 -> int16 -> int64 code round trip (audiocraft) is a Cast TensorRT cannot parse."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=-1),
             helper.make_node("Cast", ["a"], ["a16"], to=TensorProto.INT16),
             helper.make_node("Cast", ["a16"], ["codes"], to=TensorProto.INT64)]
    p = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 8])], [_vi("codes", TensorProto.INT64, [2, 1])], tmp_path / "i16.onnx")
    rep = check_trt_compatibility(p)
    assert not rep.ok and _has(rep.problems, "int16", "a16", "int32")


def test_unsupported_op_and_op_missing_from_the_table(tmp_path):
    p = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [None])], tmp_path / "u.onnx")
    rep = check_trt_compatibility(p)
    assert _has(rep.problems, "Unique", "not supported") and rep.ops == {"Unique": 1}
    p = _model([helper.make_node("TotallyNewOp", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "n.onnx")
    assert _has(check_trt_compatibility(p).problems, "TotallyNewOp", "operator table")


def test_custom_domain_is_a_problem(tmp_path):
    node = helper.make_node("FancyAttention", ["x"], ["y"], domain="com.example", name="fa")
    p = _model([node], [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "c.onnx",
               extra_opsets=[("com.example", 1)])
    rep = check_trt_compatibility(p)
    assert _has(rep.problems, "com.example", "plugin") and rep.ops == {"com.example:FancyAttention": 1}


@pytest.mark.parametrize("elem, name, why", [(TensorProto.DOUBLE, "float64", "float32"),
                                              (TensorProto.STRING, "string", "no such tensor type"),
                                              (TensorProto.UINT16, "uint16", "no such tensor type")])
def test_types_tensorrt_lacks(elem, name, why, tmp_path):
    p = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", elem, [4])], [_vi("y", elem, [4])],
               tmp_path / f"{name}.onnx")
    assert _has(check_trt_compatibility(p).problems, name, why)


def test_int64_is_fine_except_where_the_parser_rejects_it(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "b"], ["y"], name="mm")]
    p = _model(nodes, [_vi("a", TensorProto.INT64, [2, 2]), _vi("b", TensorProto.INT64, [2, 2])],
               [_vi("y", TensorProto.INT64, [2, 2])], tmp_path / "i64.onnx")
    rep = check_trt_compatibility(p)
    assert _has(rep.problems, "MatMul", "int64", "rejected") and len(rep.problems) == 1


def test_uint8_only_at_io_and_int8_only_through_quantization(tmp_path):
    ok = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [_vi("x", TensorProto.UINT8, [4])],
                [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "u8io.onnx")
    assert check_trt_compatibility(ok).ok
    for dtype, name in ((TensorProto.UINT8, "uint8"), (TensorProto.INT8, "int8")):
        nodes = [helper.make_node("Cast", ["x"], ["mid"], to=dtype), helper.make_node("Cast", ["mid"], ["y"], to=TensorProto.FLOAT)]
        bad = _model(nodes, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / f"{name}.onnx")
        assert _has(check_trt_compatibility(bad).problems, name, "mid")
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    p = _model(qdq, [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "qdq.onnx",
               initializers=[scale, zp])
    assert check_trt_compatibility(p).ok


def test_opset_range(tmp_path):
    p = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [4])],
               [_vi("y", TensorProto.FLOAT, [4])], tmp_path / "o.onnx", opset=7)
    assert _has(check_trt_compatibility(p).problems, "opset 7")


@pytest.fixture()
def dyn_linear(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", TensorProto.FLOAT, ["batch", 16])],
                  [_vi("y", TensorProto.FLOAT, ["batch", 8])], tmp_path / "lin.onnx", initializers=[w])


def test_profile_must_cover_the_runtime_shapes(dyn_linear):
    rep = check_trt_compatibility(dyn_linear, profiles={"x": ((1, 16), (2, 16), (4, 16))},
                                  runtime_shapes=[{"x": (2, 16)}, {"x": (8, 16)}])
    assert _has(rep.problems, "runtime shape #1", "(8, 16)", "outside") and not _has(rep.problems, "runtime shape #0")


@pytest.mark.parametrize("profiles, runtime, needle", [
    ({"x": ((4, 16), (2, 16), (8, 16))}, [], "min <= opt <= max"),
    ({"x": ((1, 8), (2, 8), (4, 8))}, [], "static"),
    ({"x": ((1, 16, 1), (2, 16, 1), (4, 16, 1))}, [], "rank"),
    ({"nope": ((1, 16), (1, 16), (1, 16))}, [], "not an input"),
    ({}, [], "no optimisation profile"),
    ({"x": ((1, 16), (1, 16), (4, 16))}, [{"x": (2, 15)}], "static graph dims"),
    ({"x": ((1, 16), (1, 16), (4, 16))}, [{"x": (2, 16, 1)}], "rank 3"),
])
def test_profile_and_runtime_shape_errors(dyn_linear, profiles, runtime, needle):
    rep = check_trt_compatibility(dyn_linear, profiles=profiles, runtime_shapes=runtime)
    assert _has(rep.problems, needle), rep.problems
