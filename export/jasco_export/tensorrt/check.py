"""TensorRT-free check that an exported ONNX graph can become a TensorRT 10 engine (needs ``onnx`` only).

What JASCO's graphs need checked before a GPU ever sees them, and nothing more:

* op membership: every node's op is a supported op of TensorRT 10's ONNX operator table
  (``data/tensorrt_onnx_ops.json``, from onnx-tensorrt's ``docs/operators.md``) in the ai.onnx domain;
* dtypes: no tensor of a type TensorRT lacks (float64, int16 — the audiocraft int64→int16→int64 code round
  trip was caught here —, uint8 away from the I/O, int8 outside quantisation) and no input type the
  parser rejects for that op (e.g. MatMul on int64);
* shapes: the optimisation profile fits the graph's static dims, and every feed the runtime sends
  (each dynamic axis at its min and max) lies inside it.

``tests/test_tensorrt_check.py`` pins the exact op set of the exported graphs, so a new op forces a review
of this check and of the TensorRT build.
"""
from __future__ import annotations

import functools
import json
import typing as tp
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jasco_runtime.errors import first_line

from ..errors import InputError

OPS_FILE = Path(__file__).resolve().parent.parent / "data" / "tensorrt_onnx_ops.json"
Shape = tp.Tuple[int, ...]
Profiles = tp.Mapping[str, tp.Tuple[tp.Sequence[int], tp.Sequence[int], tp.Sequence[int]]]
_MAX_LISTED = 5


@functools.lru_cache(maxsize=None)
def load_op_table() -> tp.Dict[str, tp.Any]:
    """TensorRT 10's ONNX operator table (``source`` inside says where it was read)."""
    return json.loads(OPS_FILE.read_text())


@dataclass
class CompatReport:
    """Result of :func:`check_trt_compatibility`; ``ok`` is False when any problem was found."""

    ok: bool
    problems: tp.List[str]
    ops: tp.Dict[str, int]
    warnings: tp.List[str] = field(default_factory=list)
    opset: tp.Optional[int] = None
    table: str = ""

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return asdict(self)


def _dtype_name(elem_type: int) -> str:
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def _tensor_types(graph) -> tp.Dict[str, str]:
    """Name → dtype of every typed tensor: I/O, inferred value_info, initializers, Constant and Cast outputs."""
    types: tp.Dict[str, str] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = _dtype_name(vi.type.tensor_type.elem_type)
    for init in graph.initializer:
        types[init.name] = _dtype_name(init.data_type)
    for node in graph.node:
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value":
                types[node.output[0]] = _dtype_name(a.t.data_type)
            elif node.op_type == "Cast" and a.name == "to" and node.output[0] not in types:
                types[node.output[0]] = _dtype_name(a.i)
    return types


def _why(dtype: str, table: tp.Dict[str, tp.Any]) -> str:
    if dtype == "float64":
        return "TensorRT casts DOUBLE to float32 (clamping to ±FLT_MAX); export in float32"
    if dtype in table["io_only_dtypes"]:
        return "TensorRT takes uint8 only as a network input or output"
    if dtype in table["quantized_dtypes"]:
        return "TensorRT takes int8/int4/fp8/fp4 only through quantization (QuantizeLinear/DequantizeLinear)"
    return "TensorRT has no such tensor type (use int32 or int64)"


def _check_graph(model, table: tp.Dict[str, tp.Any], problems: tp.List[str]) -> Counter:
    graph = model.graph
    ops: Counter = Counter()
    types = _tensor_types(graph)
    for node in graph.node:
        label = f"{node.op_type} node '{node.name or node.output[0]}'"
        if node.domain not in ("", "ai.onnx"):
            ops[f"{node.domain}:{node.op_type}"] += 1
            problems.append(f"{label}: op domain '{node.domain}' is not ai.onnx; TensorRT would look for a plugin "
                            f"named '{node.op_type}' and fail")
            continue
        ops[node.op_type] += 1
        entry = table["ops"].get(node.op_type)
        if entry is None:
            problems.append(f"{label}: op '{node.op_type}' is not in TensorRT {table['source']['doc_trt_version']}'s "
                            "ONNX operator table")
        elif not entry["supported"]:
            problems.append(f"{label}: op '{node.op_type}' is not supported by TensorRT {table['trt_major']}"
                            + (f": {entry['notes']}" if entry.get("notes") else ""))
        for idx, bad in table["parser_rejects"].get(node.op_type, {}).items():
            name = node.input[int(idx)] if int(idx) < len(node.input) else ""
            if name and types.get(name) in bad:
                problems.append(f"{label}: a {types[name]} input #{idx} is rejected by the TensorRT ONNX parser")
    # tensors of types TensorRT lacks, grouped per dtype
    io = {vi.name for vi in list(graph.input) + list(graph.output)}
    quantized_ok = {n for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")  # + zero points
                    for n in list(node.output[:1] if node.op_type == "QuantizeLinear" else node.input[:1]) + list(node.input[2:3])}
    bad: tp.Dict[str, tp.List[str]] = {}
    for name, dtype in types.items():
        if dtype in table["supported_dtypes"] or dtype == "undefined" or (dtype in table["io_only_dtypes"] and name in io) \
                or (dtype in table["quantized_dtypes"] and name in quantized_ok):
            continue
        bad.setdefault(dtype, []).append(name)
    for dtype, names in bad.items():
        listed = ", ".join(names[:_MAX_LISTED]) + (f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")
        problems.append(f"{len(names)} {dtype} tensor(s): {listed}; {_why(dtype, table)}")
    return ops


def _input_dims(model) -> tp.Dict[str, tp.List[tp.Optional[int]]]:
    """Graph inputs → dims (int when static, None when dynamic)."""
    inits = {i.name for i in model.graph.initializer}
    return {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in model.graph.input if vi.name not in inits}


def _check_shapes(model, profiles: tp.Optional[Profiles], runtime_shapes: tp.Sequence[tp.Mapping[str, tp.Sequence[int]]],
                  problems: tp.List[str]) -> None:
    dims = _input_dims(model)
    norm: tp.Dict[str, tp.Tuple[Shape, Shape, Shape]] = {}
    for name, d in dims.items():
        if profiles is None:
            continue
        if name not in profiles:
            if any(x is None for x in d):
                problems.append(f"input '{name}' has dynamic axes {d} but no optimisation profile")
            continue
        mn, opt, mx = (tuple(int(v) for v in s) for s in profiles[name])
        if not len(mn) == len(opt) == len(mx) == len(d):
            problems.append(f"profile for '{name}': rank {len(mn)} but the graph input has rank {len(d)}")
            continue
        for i, static in enumerate(d):
            if not mn[i] <= opt[i] <= mx[i] or mn[i] < 0:
                problems.append(f"profile for '{name}': axis {i} needs 0 <= min <= opt <= max, got {mn[i]}, {opt[i]}, {mx[i]}")
            elif static is not None and not mn[i] == mx[i] == static:
                problems.append(f"profile for '{name}': axis {i} is static ({static}) in the graph but the profile "
                                f"gives {mn[i]}..{mx[i]}")
        norm[name] = (mn, opt, mx)
    for name in set(profiles or {}) - set(dims):
        problems.append(f"profile names '{name}', which is not an input of the graph ({sorted(dims)})")
    for k, shapes in enumerate(runtime_shapes):
        for name, shape in shapes.items():
            shape = tuple(int(v) for v in shape)
            tag = f"runtime shape #{k} of '{name}' {shape}"
            d = dims.get(name)
            if d is None:
                problems.append(f"{tag}: not an input of the graph")
            elif len(d) != len(shape):
                problems.append(f"{tag}: rank {len(shape)} but the graph input has rank {len(d)}")
            elif any(s is not None and s != v for s, v in zip(d, shape)):
                problems.append(f"{tag}: differs from the static graph dims {d}")
            elif name in norm:
                mn, _, mx = norm[name]
                out = [i for i, v in enumerate(shape) if not mn[i] <= v <= mx[i]]
                if out:
                    problems.append(f"{tag}: axes {out} outside the optimisation profile [{mn}, {mx}]; widen the "
                                    "profile or the engine will reject it")


def check_trt_compatibility(onnx_path: tp.Union[str, Path], profiles: tp.Optional[Profiles] = None,
                            runtime_shapes: tp.Sequence[tp.Mapping[str, tp.Sequence[int]]] = ()) -> CompatReport:
    """Check, without TensorRT, that ``onnx_path`` can become a TensorRT 10 engine.

    ``profiles``: ``{input: (min_shape, opt_shape, max_shape)}`` (every dynamic input needs one);
    ``runtime_shapes``: the ``{input: shape}`` feeds the runtime will send — each must lie inside the profile.
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX file {path} not found")
    table = load_op_table()
    model = onnx.load(str(path), load_external_data=False)
    warnings: tp.List[str] = []
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    except Exception as exc:  # pragma: no cover - depends on the graph
        inferred = model
        warnings.append(f"ONNX shape inference failed ({first_line(exc, 200)}); dtypes of declared tensors only")
    problems: tp.List[str] = []
    opset = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    lo, hi = table["opset_range"]
    if opset is None or not lo <= opset <= hi:
        problems.append(f"ai.onnx opset {opset} is outside TensorRT {table['source']['doc_trt_version']}'s range {lo}..{hi}")
    ops = _check_graph(inferred, table, problems)
    _check_shapes(model, profiles, runtime_shapes, problems)
    src = table["source"]
    return CompatReport(ok=not problems, problems=problems, ops=dict(sorted(ops.items())), warnings=warnings,
                        opset=opset, table=f"TensorRT {src['doc_trt_version']} ({src['url']})")
