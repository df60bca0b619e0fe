"""TensorRT side of the export: a TensorRT-free compatibility check, FP16 engine builds, engine cache keys.

* :func:`check_trt_compatibility` needs only ``onnx``: every op of the graph (main graph, ``If``/``Loop``/
  ``Scan`` subgraphs, model-local functions) is looked up in TensorRT 10's ONNX operator table
  (``data/tensorrt_onnx_ops.json``, taken from onnx-tensorrt's ``docs/operators.md``), together with the
  tensor dtypes TensorRT cannot take, cheap attribute-level restrictions and the optimisation profiles
  against the shapes the runtime will feed.
* :func:`build_engine` is written against the standard TensorRT 10 Python API (imported lazily): a
  strongly typed network (the precision comes from the mixed fp16/fp32 ONNX itself, not from the
  deprecated FP16 builder flag), ``OnnxParser.parse_from_file`` (external data), one optimisation
  profile, a persistent timing cache and an atomic write of the plan.
* :func:`engine_cache_key` / :func:`device_info` name what makes a plan valid: the graph bytes, the
  precision, the GPU (name + compute capability) and the TensorRT version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import typing as tp
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError, JascoError

OPS_FILE = Path(__file__).resolve().parent.parent / "data" / "tensorrt_onnx_ops.json"

Shape = tp.Tuple[int, ...]
ProfileSpec = tp.Mapping[str, tp.Any]  # input -> (min, opt, max) shapes | {axis: (min, opt, max)}


class TensorRTUnavailable(JascoError, RuntimeError):
    """TensorRT or a CUDA device is not available here; ``reason`` is a one-line explanation."""

    def __init__(self, reason: str):
        self.reason = _one_line(reason)
        super().__init__(self.reason)


class EngineBuildError(JascoError):
    """TensorRT is there but parsing the ONNX graph or building the engine failed."""


# --------------------------------------------------------------------------------------------------
# operator table
# --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_op_table(trt_major: int = 10) -> tp.Dict[str, tp.Any]:
    """TensorRT's ONNX operator support table (see ``source`` inside for where it was read)."""
    if int(trt_major) != 10:
        raise InputError(f"no operator table for TensorRT {trt_major}.x; {OPS_FILE.name} covers TensorRT 10")
    table = json.loads(OPS_FILE.read_text())
    if int(table.get("trt_major", -1)) != 10:
        raise InputError(f"{OPS_FILE} is not a TensorRT 10 table")
    return table


def _dtype_name(elem_type: int) -> str:
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


# --------------------------------------------------------------------------------------------------
# compatibility report
# --------------------------------------------------------------------------------------------------

@dataclass
class CompatReport:
    """Result of :func:`check_trt_compatibility`; ``ok`` is False when any problem was found."""

    ok: bool
    problems: tp.List[str]
    ops: tp.Dict[str, int]
    warnings: tp.List[str] = field(default_factory=list)
    opset: tp.Optional[int] = None
    trt_major: int = 10
    table: str = ""  # which operator table was used (doc version + url)

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return asdict(self)


_QDQ = ("QuantizeLinear", "DequantizeLinear")
_OUTPUT_TYPED = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike",
                 "RandomUniformLike"}
_NO_DTYPE_CHECK = {"If", "Loop", "Scan"}
_REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare"}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_PAD_MODES = {"constant", "reflect", "edge", "wrap"}
_MAX_LISTED = 5


class _Checker:
    def __init__(self, model, table: tp.Dict[str, tp.Any], plugins: tp.Iterable[str]):
        self.model = model
        self.table = table
        self.ops_table: tp.Dict[str, tp.Dict[str, tp.Any]] = table["ops"]
        self.plugins = set(plugins or ())
        self.problems: tp.List[str] = []
        self.warnings: tp.List[str] = []
        self.ops: Counter = Counter()
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self._walked_functions: tp.Set[tp.Tuple[str, str]] = set()
        # dtype findings, grouped so that a graph with 1000 float64 tensors gives one line
        self.bad_dtypes: tp.Dict[str, tp.List[str]] = {}
        self.doc_dtype: tp.Dict[tp.Tuple[str, str], tp.List[str]] = {}
        self.rejects: tp.Dict[tp.Tuple[str, int, str], tp.List[str]] = {}
        self._consts: tp.Optional[tp.Dict[str, tp.Any]] = None

    # ---------------------------------------------------------------- helpers
    def problem(self, msg: str) -> None:
        if msg not in self.problems:
            self.problems.append(msg)

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    @staticmethod
    def _label(node, where: str) -> str:
        name = f"{node.op_type} node '{node.name}'" if node.name else f"{node.op_type} node -> {list(node.output)[:1]}"
        return f"{name}{' in ' + where if where else ''}"

    @staticmethod
    def _attrs(node) -> tp.Dict[str, tp.Any]:
        import onnx

        out = {}
        for a in node.attribute:
            if a.ref_attr_name:  # inside a function: value bound at the call site
                continue
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [x.decode("utf-8", "replace") for x in v]
            out[a.name] = v
        return out

    # ---------------------------------------------------------------- dtypes
    def _classify(self, name: str, dtype: str, where: str, io: bool, qdq_ok: tp.Set[str]) -> None:
        t = self.table
        if dtype in t["supported_dtypes"] or dtype == "undefined":
            return
        if dtype in t["io_only_dtypes"] and io:
            return
        if dtype in t["quantized_dtypes"] and name in qdq_ok:
            return
        self.bad_dtypes.setdefault(dtype, [])
        label = f"{name}" + (f" ({where})" if where else "")
        if label not in self.bad_dtypes[dtype]:
            self.bad_dtypes[dtype].append(label)

    def _flush_dtypes(self) -> None:
        t = self.table
        for dtype, names in self.bad_dtypes.items():
            listed = ", ".join(names[:_MAX_LISTED]) + (f" (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")
            if dtype == "float64":
                why = ("TensorRT has only limited DOUBLE support: it casts to float32 (clamping to +-FLT_MAX), so the "
                       "engine's I/O dtypes and numerics would differ from the graph; export in float32")
            elif dtype in t["io_only_dtypes"]:
                why = "TensorRT takes uint8 only as a network input or output, not as an intermediate tensor"
            elif dtype in t["quantized_dtypes"]:
                why = ("TensorRT takes int8/int4/fp8/fp4 only through quantization (QuantizeLinear output or "
                       "DequantizeLinear input)")
            elif dtype in ("int16", "uint16", "uint32", "uint64", "int2", "uint2", "uint4"):
                why = "TensorRT has no such tensor type (use int32 or int64)"
            else:
                why = "TensorRT has no such tensor type"
            self.problem(f"{len(names)} {dtype} tensor(s): {listed}; {why}")
        for (op, dtype), nodes in self.doc_dtype.items():
            allowed = self.ops_table[op]["dtypes"]
            self.warn(f"{op} on {dtype} ({len(nodes)} node(s), e.g. {nodes[0]}): not among the documented TensorRT "
                      f"{self.table['source']['doc_trt_version']} types {allowed}")
        for (op, idx, dtype), nodes in self.rejects.items():
            self.problem(f"{op} with a {dtype} input #{idx} ({len(nodes)} node(s), e.g. {nodes[0]}): rejected by the "
                         "TensorRT ONNX parser")

    # ---------------------------------------------------------------- walking
    def check_model(self) -> None:
        graph = self.model.graph
        self.walk_graph(graph, where="", outer_types={}, outer_consts=set(), main=True)
        self._flush_dtypes()

    def walk_graph(self, graph, where: str, outer_types: tp.Dict[str, str], outer_consts: tp.Set[str],
                   main: bool) -> None:
        types = dict(outer_types)
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.type.HasField("tensor_type"):
                types[vi.name] = _dtype_name(vi.type.tensor_type.elem_type)
            elif vi.type.WhichOneof("value") is not None:
                self.problem(f"{vi.name}{' in ' + where if where else ''} is a "
                             f"{vi.type.WhichOneof('value')} value; TensorRT takes tensors only")
        for init in graph.initializer:
            types[init.name] = _dtype_name(init.data_type)
        if len(graph.sparse_initializer):
            self.problem(f"{len(graph.sparse_initializer)} sparse initializer(s){' in ' + where if where else ''}; "
                         "TensorRT takes dense initializers only")

        consts = set(outer_consts) | {i.name for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                consts.update(o for o in node.output if o)
                a = {x.name: x for x in node.attribute}
                if "value" in a:
                    types[node.output[0]] = _dtype_name(a["value"].t.data_type)
            elif node.op_type == "Cast" and node.output and node.output[0] and node.output[0] not in types:
                for x in node.attribute:  # declared even when shape inference gave nothing
                    if x.name == "to":
                        types[node.output[0]] = _dtype_name(x.i)

        # quantized tensors are fine where quantization puts them
        qdq_ok: tp.Set[str] = set()
        for node in graph.node:
            if node.op_type == "QuantizeLinear":
                qdq_ok.update(o for o in node.output[:1] if o)
                qdq_ok.update(i for i in node.input[2:3] if i)
            elif node.op_type == "DequantizeLinear":
                qdq_ok.update(i for i in list(node.input[:1]) + list(node.input[2:3]) if i)

        io_names = {vi.name for vi in graph.input} | {vi.name for vi in graph.output} if main else set()
        own = {vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info)}
        own |= {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output if o}
        for name in own:
            if name in types:
                self._classify(name, types[name], where, name in io_names, qdq_ok)

        for node in graph.node:
            self.check_node(node, where, types, consts)
            for a in node.attribute:
                sub = f"{where + '/' if where else ''}{node.op_type}:{node.name or '?'}.{a.name}"
                if a.type == a.GRAPH:
                    self.walk_graph(a.g, sub, types, consts, main=False)
                elif a.type == a.GRAPHS:
                    for k, g in enumerate(a.graphs):
                        self.walk_graph(g, f"{sub}[{k}]", types, consts, main=False)

    def walk_function(self, fn) -> None:
        key = (fn.domain, fn.name)
        if key in self._walked_functions:
            return
        self._walked_functions.add(key)
        where = f"function {fn.domain}:{fn.name}"
        types: tp.Dict[str, str] = {}
        for vi in getattr(fn, "value_info", []):
            if vi.type.HasField("tensor_type"):
                types[vi.name] = _dtype_name(vi.type.tensor_type.elem_type)
        consts: tp.Set[str] = set()
        for node in fn.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                consts.update(o for o in node.output if o)
        for node in fn.node:
            self.check_node(node, where, types, consts)
            for a in node.attribute:
                if a.type == a.GRAPH:
                    self.walk_graph(a.g, f"{where}/{node.op_type}.{a.name}", types, consts, main=False)
                elif a.type == a.GRAPHS:
                    for k, g in enumerate(a.graphs):
                        self.walk_graph(g, f"{where}/{node.op_type}.{a.name}[{k}]", types, consts, main=False)

    # ---------------------------------------------------------------- nodes
    def check_node(self, node, where: str, types: tp.Dict[str, str], consts: tp.Set[str]) -> None:
        op, domain = node.op_type, node.domain
        label = self._label(node, where)
        if domain not in ("", "ai.onnx"):
            self.ops[f"{domain}:{op}"] += 1
            fn = self.functions.get((domain, op))
            if fn is not None:  # the parser expands model-local functions (unless a plugin of that name exists)
                self.walk_function(fn)
            elif op in self.plugins:
                self.warn(f"{label}: domain '{domain}' imported as TensorRT plugin '{op}' (must be registered at build time)")
            else:
                self.problem(f"{label}: op domain '{domain}' is not ai.onnx; TensorRT would look for a plugin "
                             f"named '{op}' and fail (no such plugin is declared)")
            return
        self.ops[op] += 1
        entry = self.ops_table.get(op)
        if entry is None:
            fn = self.functions.get((domain, op))
            if fn is not None:
                self.walk_function(fn)
                return
            if op in self.plugins:
                self.warn(f"{label}: not a TensorRT built-in op; imported as plugin '{op}'")
                return
            self.problem(f"{label}: op '{op}' is not in TensorRT {self.table['source']['doc_trt_version']}'s ONNX "
                         "operator table")
            return
        if not entry["supported"]:
            self.problem(f"{label}: op '{op}' is not supported by TensorRT {self.table['trt_major']} "
                         f"(onnx-tensorrt operators.md){': ' + entry['notes'] if entry.get('notes') else ''}")
            return
        if entry.get("supported_in_10_1") is False:
            self.warn(f"{label}: op '{op}' is supported by the TensorRT {self.table['source']['doc_trt_version']} "
                      "parser but not by TensorRT 10.1; needs a recent TensorRT 10")
        self._check_dtypes(node, entry, label, types)
        self._check_restrictions(node, label, types, consts)

    def _check_dtypes(self, node, entry, label: str, types: tp.Dict[str, str]) -> None:
        op = node.op_type
        for idx, bad in self.table["parser_rejects"].get(op, {}).items():
            idx = int(idx)
            if idx < len(node.input) and node.input[idx] and types.get(node.input[idx]) in bad:
                self.rejects.setdefault((op, idx, types[node.input[idx]]), []).append(label)
        if op in _NO_DTYPE_CHECK or not entry["dtypes"]:
            return
        if op in _OUTPUT_TYPED:
            names = list(node.output[:1])
        elif op == "Where":
            names = list(node.input[1:2])
        elif op in ("Cast", "CastLike"):
            names = list(node.input[:1]) + list(node.output[:1])
        else:
            names = list(node.input[:1])
        for n in names:
            dt = types.get(n) if n else None
            if dt is None or dt == "undefined":
                continue
            if dt not in entry["dtypes"] and dt in self.table["supported_dtypes"] + self.table["io_only_dtypes"] \
                    + self.table["quantized_dtypes"]:
                self.doc_dtype.setdefault((op, dt), []).append(label)

    def _const_int(self, name: str) -> tp.Optional[tp.List[int]]:
        """Values of a small inline initializer (None when absent, external or not integral)."""
        import onnx.numpy_helper as nh

        if self._consts is None:
            self._consts = {i.name: i for i in self.model.graph.initializer}
            for node in self.model.graph.node:
                if node.op_type == "Constant" and node.output and node.output[0]:
                    for a in node.attribute:
                        if a.name == "value":
                            self._consts[node.output[0]] = a.t
        init = self._consts.get(name)
        if init is None or init.data_location == init.EXTERNAL:
            return None
        try:
            return [int(v) for v in nh.to_array(init).reshape(-1).tolist()]
        except Exception:
            return None

    def _check_restrictions(self, node, label: str, types: tp.Dict[str, str], consts: tp.Set[str]) -> None:
        op = node.op_type
        a = self._attrs(node)
        inp = list(node.input)
        out = list(node.output)

        def given(i: int) -> bool:
            return i < len(inp) and bool(inp[i])

        if op == "Pad":
            mode = a.get("mode", "constant")
            if mode not in _PAD_MODES:
                self.problem(f"{label}: Pad mode '{mode}' not supported (TensorRT: {sorted(_PAD_MODES)})")
            if given(3) and inp[3] not in consts:
                self.warn(f"{label}: Pad 'axes' is not an initializer (required by TensorRT <= 10.1)")
        elif op in ("Resize", "Upsample"):
            mode = a.get("mode", "nearest")
            if mode == "cubic":
                self.warn(f"{label}: Resize mode 'cubic' is not in the documented modes (nearest, linear); the "
                          "TensorRT 10 parser does implement it — verify the engine against ONNX Runtime")
            elif mode not in ("nearest", "linear"):
                self.problem(f"{label}: Resize mode '{mode}' not supported (nearest, linear)")
            if op == "Resize":
                ctm = a.get("coordinate_transformation_mode", "half_pixel")
                if ctm not in _RESIZE_COORD:
                    self.problem(f"{label}: Resize coordinate_transformation_mode '{ctm}' not supported "
                                 f"({sorted(_RESIZE_COORD)})")
                nm = a.get("nearest_mode", "round_prefer_floor")
                if mode == "nearest" and nm not in _RESIZE_NEAREST:
                    self.problem(f"{label}: Resize nearest_mode '{nm}' not supported")
                if int(a.get("antialias", 0)):
                    self.problem(f"{label}: Resize antialias=1 is not supported by TensorRT")
                if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
                    self.problem(f"{label}: Resize keep_aspect_ratio_policy "
                                 f"'{a['keep_aspect_ratio_policy']}' not supported (stretch only)")
                axes = a.get("axes")
                if axes is not None and list(axes) != list(range(len(axes))) and given(2) and inp[2] not in consts:
                    self.problem(f"{label}: Resize with a tensor 'scales' needs 'axes' to be 0..rank-1 (got {list(axes)})")
        elif op in ("LSTM", "GRU", "RNN"):
            if int(a.get("layout", 0)) != 0:
                self.problem(f"{label}: {op} layout=1 is not supported (TensorRT parses {op} as layout=0)")
            if op == "LSTM" and int(a.get("input_forget", 0)) != 0:
                self.problem(f"{label}: LSTM input_forget=1 is not supported")
            acts = a.get("activations")
            if a.get("direction", "forward") == "bidirectional" and acts:
                half = len(acts) // 2
                if [x.lower() for x in acts[:half]] != [x.lower() for x in acts[half:]]:
                    self.problem(f"{label}: bidirectional {op} needs the same activations for both directions "
                                 f"(got {acts})")
        elif op in ("MaxPool", "AveragePool", "LpPool"):
            dil = a.get("dilations")
            if dil and any(int(d) != 1 for d in dil):
                self.problem(f"{label}: {op} dilations {list(dil)} not supported (must be all ones)")
            ks = a.get("kernel_shape")
            if ks is not None and len(ks) > 3:
                self.problem(f"{label}: {op} over {len(ks)} spatial dims not supported (1D/2D/3D only)")
            if op == "MaxPool" and len(out) > 1 and out[1]:
                self.problem(f"{label}: MaxPool 'Indices' output is not supported")
        elif op == "TopK":
            if int(a.get("sorted", 1)) != 1:
                self.problem(f"{label}: TopK sorted=0 is not supported")
            k = self._const_int(inp[1]) if given(1) else None
            if k and k[0] >= 3840:
                self.problem(f"{label}: TopK K={k[0]} too large (TensorRT: K < 3840)")
        elif op == "Constant":
            for bad in ("sparse_value", "value_string", "value_strings"):
                if bad in a:
                    self.problem(f"{label}: Constant '{bad}' attribute is not supported")
        elif op == "Dropout":
            if given(2):
                if inp[2] not in consts:
                    self.problem(f"{label}: Dropout training_mode must be an initializer evaluating to False")
                else:
                    v = self._const_int(inp[2])
                    if v and v[0]:
                        self.problem(f"{label}: Dropout training_mode=True is not supported")
        elif op == "ScatterND":
            red = a.get("reduction")
            if red is not None and red != "none":
                self.problem(f"{label}: ScatterND reduction '{red}' is not supported")
            elif red == "none":
                self.warn(f"{label}: ScatterND carries a 'reduction' attribute; TensorRT <= 10.1 rejects it even "
                          "when 'none' (drop the attribute)")
        elif op == "LayerNormalization":
            if any(o for o in out[1:]):
                self.problem(f"{label}: only the first LayerNormalization output (Y) is supported")
        elif op == "CumSum":
            if given(1) and inp[1] not in consts:
                self.warn(f"{label}: CumSum axis must be a build-time constant")
        elif op in _REDUCE:
            if given(1) and inp[1] not in consts:
                self.problem(f"{label}: {op} 'axes' must be an initializer")
        elif op == "OneHot":
            if given(1) and inp[1] not in consts:
                self.warn(f"{label}: OneHot depth must be a build-time constant")
        elif op in _QDQ:
            if given(2) and inp[2] in consts:
                zp = self._const_int(inp[2])
                if zp and any(zp):
                    self.problem(f"{label}: {op} zero point must be 0 (got {zp[:4]})")
        elif op == "STFT":
            for i, what in ((1, "frame_step"), (2, "window")):
                if given(i) and inp[i] not in consts:
                    self.problem(f"{label}: STFT {what} must be an initializer")
        elif op == "Attention":
            for i, what in ((4, "past_key"), (5, "past_value"), (6, "nonpad_kv_seqlen")):
                if given(i):
                    self.problem(f"{label}: Attention input '{what}' is not supported")
            for i, what in ((1, "present_key"), (2, "present_value"), (3, "qk_matmul_output")):
                if i < len(out) and out[i]:
                    self.problem(f"{label}: Attention output '{what}' is not supported")
            if float(a.get("softcap", 0.0)) != 0.0 or int(a.get("qk_matmul_output_mode", 0)) != 0:
                self.problem(f"{label}: Attention softcap / qk_matmul_output_mode are not supported")
        elif op == "TensorScatter":
            if int(a.get("axis", -2)) != -2:
                self.problem(f"{label}: TensorScatter axis must be -2")
        elif op in ("Squeeze", "Unsqueeze", "Slice"):
            i = 3 if op == "Slice" else 1
            if given(i) and inp[i] not in consts:
                self.warn(f"{label}: {op} 'axes' is not an initializer (TensorRT <= 10.1 requires one)")


# --------------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------------

def _onnx_input_dims(model) -> tp.Dict[str, tp.List[tp.Union[int, str, None]]]:
    """Graph inputs (not initializers) -> dims: int (static), str (named dynamic) or None (unnamed)."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out[vi.name] = None
            continue
        dims: tp.List[tp.Union[int, str, None]] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        out[vi.name] = dims
    return out


def _is_shape(x) -> bool:
    return isinstance(x, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def normalize_profile(name: str, dims: tp.Optional[tp.Sequence[tp.Union[int, str, None]]], spec: tp.Any,
                      problems: tp.List[str]) -> tp.Optional[tp.Tuple[Shape, Shape, Shape]]:
    """One input's profile as full (min, opt, max) shapes; problems are appended, None if unusable.

    ``spec`` is either three full shapes ``(min_shape, opt_shape, max_shape)`` or a mapping from dynamic
    axis (its ``dim_param`` name or its index) to ``(min, opt, max)``; static axes are filled from ``dims``.
    """
    if isinstance(spec, tp.Mapping):
        if dims is None:
            problems.append(f"profile for '{name}': the graph does not declare its rank; give full shapes")
            return None
        mins, opts, maxs = [], [], []
        used = set()
        for i, d in enumerate(dims):
            if isinstance(d, int):
                rng = (d, d, d)
                for key in (i, str(i)):
                    if key in spec:
                        used.add(key)
                        rng = tuple(spec[key])
            else:
                key = next((k for k in (d, i, str(i)) if k is not None and k in spec), None)
                if key is None:
                    problems.append(f"profile for '{name}': no (min, opt, max) for dynamic axis {i}"
                                    f"{' (' + d + ')' if isinstance(d, str) else ''}")
                    return None
                used.add(key)
                rng = tuple(spec[key])
            if len(rng) != 3 or not _is_shape(rng):
                problems.append(f"profile for '{name}': axis {i} range {rng!r} is not (min, opt, max) ints")
                return None
            mins.append(rng[0]); opts.append(rng[1]); maxs.append(rng[2])
        unknown = [k for k in spec if k not in used]
        if unknown:
            problems.append(f"profile for '{name}': axes {unknown} are not dynamic axes of the input (dims {dims})")
        shapes = (tuple(mins), tuple(opts), tuple(maxs))
    else:
        if not isinstance(spec, (tuple, list)) or len(spec) != 3 or not all(_is_shape(s) for s in spec):
            problems.append(f"profile for '{name}': expected (min_shape, opt_shape, max_shape), got {spec!r}")
            return None
        shapes = tuple(tuple(int(v) for v in s) for s in spec)
    mn, op, mx = shapes
    if not (len(mn) == len(op) == len(mx)):
        problems.append(f"profile for '{name}': min/opt/max ranks differ {shapes}")
        return None
    if dims is not None and len(dims) != len(mn):
        problems.append(f"profile for '{name}': rank {len(mn)} but the graph input has rank {len(dims)}")
        return None
    bad = False
    for i in range(len(mn)):
        if mn[i] < 0:
            problems.append(f"profile for '{name}': axis {i} min {mn[i]} < 0")
            bad = True
        if not (mn[i] <= op[i] <= mx[i]):
            problems.append(f"profile for '{name}': axis {i} needs min <= opt <= max, got "
                            f"{mn[i]}, {op[i]}, {mx[i]}")
            bad = True
        d = dims[i] if dims is not None else None
        if isinstance(d, int) and not (mn[i] == op[i] == mx[i] == d):
            problems.append(f"profile for '{name}': axis {i} is static ({d}) in the graph but the profile gives "
                            f"{mn[i]}/{op[i]}/{mx[i]}")
            bad = True
    return None if bad else shapes


def _check_profiles(model, profiles: tp.Optional[ProfileSpec], runtime_shapes, problems: tp.List[str],
                    warnings: tp.List[str]) -> None:
    dims = _onnx_input_dims(model)
    norm: tp.Dict[str, tp.Tuple[Shape, Shape, Shape]] = {}
    if profiles is not None:
        for name, spec in profiles.items():
            if name not in dims:
                problems.append(f"profile names '{name}', which is not an input of the graph ({sorted(dims)})")
                continue
            shapes = normalize_profile(name, dims[name], spec, problems)
            if shapes is not None:
                norm[name] = shapes
        for name, d in dims.items():
            dynamic = d is None or any(not isinstance(x, int) for x in d)
            if dynamic and name not in profiles:
                problems.append(f"input '{name}' has dynamic axes {d} but no optimisation profile")
    for k, shapes in enumerate(runtime_shapes or []):
        for name, shape in shapes.items():
            shape = tuple(int(v) for v in shape)
            tag = f"runtime shape #{k} of '{name}' {shape}"
            if name not in dims:
                problems.append(f"{tag}: not an input of the graph")
                continue
            d = dims[name]
            if d is not None and len(d) != len(shape):
                problems.append(f"{tag}: rank {len(shape)} but the graph input has rank {len(d)}")
                continue
            if d is not None:
                static_bad = [i for i, x in enumerate(d) if isinstance(x, int) and x != shape[i]]
                if static_bad:
                    problems.append(f"{tag}: axes {static_bad} differ from the static graph dims {d}")
                    continue
            if profiles is None:
                continue
            if name not in norm:
                if d is None or any(not isinstance(x, int) for x in d):
                    problems.append(f"{tag}: no usable optimisation profile for this input")
                continue
            mn, _, mx = norm[name]
            out = [i for i in range(len(shape)) if not (mn[i] <= shape[i] <= mx[i])]
            if out:
                problems.append(f"{tag}: axes {out} outside the optimisation profile "
                                f"[{mn}, {mx}]; widen the profile or the engine will reject it")
    if runtime_shapes and profiles is None:
        warnings.append("runtime shapes given without profiles: only ranks and static dims were checked")


# --------------------------------------------------------------------------------------------------
# public check
# --------------------------------------------------------------------------------------------------

def check_trt_compatibility(onnx_path: tp.Union[str, Path], profiles: tp.Optional[ProfileSpec] = None,
                            runtime_shapes: tp.Optional[tp.Sequence[tp.Mapping[str, tp.Sequence[int]]]] = None,
                            trt_major: int = 10, plugins: tp.Iterable[str] = ()) -> CompatReport:
    """Check, without TensorRT, that ``onnx_path`` can become a TensorRT ``trt_major``.x engine.

    ``profiles``: ``{input: (min_shape, opt_shape, max_shape)}`` or ``{input: {axis: (min, opt, max)}}``
    (axis = ``dim_param`` name or index); ``runtime_shapes``: the ``{input: shape}`` feeds the runtime will
    use — each must lie inside the profile.  ``plugins``: op types known to be registered TensorRT plugins.
    Problems make ``ok`` False; warnings are documented-but-uncertain cases (for example an op dtype the
    operator table does not list, or an op newer than TensorRT 10.1).
    """
    import onnx

    table = load_op_table(trt_major)
    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX file {path} not found")
    model = onnx.load(str(path), load_external_data=False)
    warnings: tp.List[str] = []
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
    except Exception as exc:  # pragma: no cover - depends on the graph
        inferred = model
        warnings.append(f"ONNX shape inference failed ({_one_line(str(exc))[:200]}); dtype checks use declared "
                        "tensors only")

    checker = _Checker(inferred, table, plugins)
    opset = None
    lo, hi = table["opset_range"]
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = int(imp.version)
    if opset is None:
        checker.problem("the model imports no ai.onnx opset")
    elif not lo <= opset <= hi:
        checker.problem(f"ai.onnx opset {opset} is outside TensorRT {table['source']['doc_trt_version']}'s range "
                        f"{lo}..{hi}")
    elif opset > table["opset_range_10_1"][1]:
        checker.warn(f"ai.onnx opset {opset} needs a TensorRT newer than 10.1 (10.1 parses opsets "
                     f"{table['opset_range_10_1'][0]}..{table['opset_range_10_1'][1]})")
    checker.check_model()
    problems = list(checker.problems)
    warnings = warnings + checker.warnings
    _check_profiles(model, profiles, runtime_shapes, problems, warnings)
    src = table["source"]
    return CompatReport(ok=not problems, problems=problems, ops=dict(sorted(checker.ops.items())),
                        warnings=warnings, opset=opset, trt_major=int(trt_major),
                        table=f"TensorRT {src['doc_trt_version']} ({src['url']})")


# --------------------------------------------------------------------------------------------------
# engine building (TensorRT imported lazily)
# --------------------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _default_log(msg: str) -> None:
    print(f"[jasco-export] {msg}", flush=True)


def _cuda_python_runtime():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return cudart
    except Exception:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except Exception:
        return None


def _cuda_device_count() -> tp.Optional[int]:
    """Visible CUDA devices via cuda-python; None when that cannot be asked."""
    cudart = _cuda_python_runtime()
    if cudart is None:
        return None
    try:
        err, n = cudart.cudaGetDeviceCount()
        return int(n) if int(err) == 0 else 0
    except Exception:
        return None


def _require_tensorrt():
    """The ``tensorrt`` module (>= 10) on a machine with a CUDA device, else TensorRTUnavailable."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising something else
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt: {exc}); install TensorRT 10.x "
                                  "(pip install tensorrt) on a machine with an NVIDIA GPU") from None
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {version} found; jasco-trt builds engines with the TensorRT 10 API")
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise TensorRTUnavailable(f"TensorRT {version} has no strongly typed networks")
    if _cuda_device_count() == 0:
        raise TensorRTUnavailable(f"TensorRT {version} is installed but no CUDA device is visible")
    return trt


_LOGGER = None  # one TensorRT logger per process (TensorRT warns when builders get different ones)


def _trt_logger(trt, log: tp.Callable[[str], None]):
    global _LOGGER
    if _LOGGER is None:
        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.sink: tp.Callable[[str], None] = _default_log
                self.errors: tp.List[str] = []

            def log(self, severity, msg):
                sev = int(severity)
                if sev <= int(trt.ILogger.Severity.ERROR):
                    self.errors.append(str(msg))
                    self.sink(f"TensorRT error: {msg}")
                elif sev <= int(trt.ILogger.Severity.WARNING):
                    self.sink(f"TensorRT warning: {msg}")

        _LOGGER = _Logger()
    _LOGGER.sink = log
    _LOGGER.errors = []
    return _LOGGER


def _atomic_write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _network_inputs(network) -> tp.Dict[str, tp.Any]:
    return {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}


def build_engine(onnx_path: tp.Union[str, Path], engine_path: tp.Union[str, Path], profiles: ProfileSpec,
                 timing_cache_path: tp.Union[str, Path, None] = None, fp16: bool = True,
                 workspace_gb: tp.Optional[float] = 4.0, strongly_typed: bool = True,
                 log: tp.Optional[tp.Callable[[str], None]] = None) -> tp.Dict[str, tp.Any]:
    """Build a serialized TensorRT engine from ``onnx_path`` and write it atomically to ``engine_path``.

    * ``strongly_typed`` (default): the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
      and every tensor keeps the dtype of the ONNX graph, so an FP16 engine comes from the mixed fp16/fp32
      ONNX (fp32 islands stay fp32).  ``fp16`` then only states what is expected: a warning is logged when the
      parsed network holds no float16 tensor.  With ``strongly_typed=False`` and ``fp16`` the deprecated
      ``BuilderFlag.FP16`` is set instead (TensorRT picks precisions; known to give NaNs on T5/flow graphs).
    * ``profiles``: ``{input: (min_shape, opt_shape, max_shape)}`` or ``{input: {axis: (min, opt, max)}}``;
      one optimisation profile is built from it.
    * ``timing_cache_path``: loaded when present (a cache from another GPU/TensorRT is ignored) and saved,
      updated, after the build.
    * ``workspace_gb``: workspace memory-pool limit (None: TensorRT's default, the whole device).

    Raises TensorRTUnavailable (no tensorrt / TensorRT < 10 / no CUDA device), InputError (bad profiles),
    EngineBuildError (parser or builder failure).  Returns a summary dict.
    """
    log = log or _default_log
    trt = _require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX file {onnx_path} not found")
    logger = _trt_logger(trt, log)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} cannot create a builder (no usable CUDA device?): "
                                  f"{exc}") from None
    if builder is None:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} cannot create a builder (no usable CUDA device?)")

    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from a file: external data is found beside it
        errs = [_one_line(str(parser.get_error(i))) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: " + " | ".join(errs[:5] or logger.errors[:5]))

    config = builder.create_builder_config()
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(float(workspace_gb) * (1 << 30)))
    if fp16 and not strongly_typed:
        log("warning: weakly typed build with BuilderFlag.FP16 (deprecated since TensorRT 10.12); prefer "
            "strongly_typed=True with the mixed-precision ONNX")
        config.set_flag(trt.BuilderFlag.FP16)
    elif fp16 and strongly_typed and not _network_has_fp16(trt, network):
        log(f"warning: {onnx_path.name} has no float16 tensors; the strongly typed engine will run in float32 "
            "(pass the fp16 ONNX for an FP16 engine)")

    # one optimisation profile covering every dynamic input (axis names come from the ONNX graph)
    inputs = _network_inputs(network)
    try:
        import onnx

        onnx_dims = _onnx_input_dims(onnx.load(str(onnx_path), load_external_data=False))
    except Exception:
        onnx_dims = {}
    problems: tp.List[str] = []
    unknown = [n for n in (profiles or {}) if n not in inputs]
    if unknown:
        problems.append(f"profiles name {unknown}, which are not network inputs {sorted(inputs)}")
    profile = builder.create_optimization_profile()
    shapes_used = {}
    for name, tensor in inputs.items():
        dims = [int(d) for d in tensor.shape]
        dynamic = any(d < 0 for d in dims)
        if getattr(tensor, "is_shape_tensor", False):
            problems.append(f"input '{name}' is a shape tensor; shape-input profiles are not supported here")
            continue
        if name not in (profiles or {}):
            if dynamic:
                problems.append(f"input '{name}' has dynamic dims {dims} but no profile")
            continue
        named = onnx_dims.get(name)
        if named is None or len(named) != len(dims):
            named = [d if d >= 0 else None for d in dims]
        else:  # TensorRT's dims are authoritative for what is static
            named = [d if d >= 0 else (n if isinstance(n, str) else None) for d, n in zip(dims, named)]
        shapes = normalize_profile(name, named, profiles[name], problems)
        if shapes is None:
            continue
        profile.set_shape(name, *shapes)
        shapes_used[name] = [list(s) for s in shapes]
    if problems:
        raise InputError(f"bad optimisation profile for {onnx_path.name}: " + "; ".join(problems))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache_path) if timing_cache_path else None
    cache_loaded = False
    if cache_path is not None:
        cache = None
        if cache_path.is_file():
            try:
                cache = config.create_timing_cache(cache_path.read_bytes())
                cache_loaded = cache is not None
            except Exception as exc:
                log(f"warning: ignoring unreadable timing cache {cache_path} ({_one_line(str(exc))})")
        if cache is None:
            cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(cache, False):  # a cache from another device/TensorRT does not apply
            log(f"warning: timing cache {cache_path} does not match this GPU/TensorRT; starting a fresh one")
            cache_loaded = False
            config.set_timing_cache(config.create_timing_cache(b""), False)

    log(f"building TensorRT {trt.__version__} engine {engine_path.name} "
        f"({'strongly typed' if strongly_typed else 'weakly typed' + (' +FP16' if fp16 else '')})")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None or (hasattr(serialized, "nbytes") and serialized.nbytes == 0):
        raise EngineBuildError(f"TensorRT failed to build {engine_path.name}: "
                               + (" | ".join(_one_line(e) for e in logger.errors[-5:]) or "see the log above"))

    if cache_path is not None:
        new_cache = config.get_timing_cache()
        if new_cache is not None:
            _atomic_write(cache_path, new_cache.serialize())
    _atomic_write(engine_path, serialized)
    log(f"engine {engine_path.name} built in {seconds:.1f} s ({engine_path.stat().st_size / 2**20:.1f} MiB)")
    return {"engine": str(engine_path), "seconds": round(seconds, 3), "trt_version": str(trt.__version__),
            "strongly_typed": bool(strongly_typed), "fp16": bool(fp16), "profile": shapes_used,
            "timing_cache": str(cache_path) if cache_path else None, "timing_cache_loaded": cache_loaded}


def _network_has_fp16(trt, network) -> bool:
    half = trt.DataType.HALF
    for i in range(network.num_inputs):
        if network.get_input(i).dtype == half:
            return True
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == half:
                return True
    return False


# --------------------------------------------------------------------------------------------------
# engine cache keys and device description
# --------------------------------------------------------------------------------------------------

def _norm_cc(cc: tp.Any) -> str:
    if isinstance(cc, (tuple, list)) and len(cc) == 2:
        return f"{int(cc[0])}.{int(cc[1])}"
    s = str(cc).strip().lower()
    m = re.fullmatch(r"(?:sm_?|compute_?)?(\d+)\.(\d+)", s)
    if m:
        return f"{int(m.group(1))}.{int(m.group(2))}"
    m = re.fullmatch(r"(?:sm_?|compute_?)(\d+)(\d)", s)
    if m:
        return f"{int(m.group(1))}.{int(m.group(2))}"
    if not s:
        raise InputError("compute capability is empty")
    return s


def engine_cache_key(onnx_sha256: str, precision: str, gpu_name: str, compute_capability: tp.Any,
                     trt_version: str) -> str:
    """A file-name-safe key naming everything that makes a serialized engine valid.

    A TensorRT plan is tied to the exact graph (``onnx_sha256``, see :func:`onnx_sha256`), the precision
    it was built for, the GPU model and compute capability (``(9, 0)``, ``"9.0"`` and ``"sm_90"`` are the
    same) and the TensorRT version.  Any change gives a different key.
    """
    sha = str(onnx_sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{16,64}", sha):
        raise InputError(f"onnx_sha256 must be a hex digest, got {onnx_sha256!r}")
    parts = {"onnx": sha, "precision": str(precision).strip().lower(), "gpu": " ".join(str(gpu_name).split()),
             "cc": _norm_cc(compute_capability), "trt": str(trt_version).strip()}
    for k, v in parts.items():
        if not v:
            raise InputError(f"engine cache key component '{k}' is empty")
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def slug(s: str, n: int) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-")[:n] or "x"

    return (f"{sha[:12]}-{slug(parts['precision'], 8)}-{slug(parts['gpu'], 24)}-sm{parts['cc'].replace('.', '')}"
            f"-trt{slug(parts['trt'], 16)}-{digest}")


def onnx_sha256(onnx_path: tp.Union[str, Path]) -> str:
    """SHA-256 of an ONNX graph including its external-data files (weights change -> digest changes)."""
    import onnx

    path = Path(onnx_path)
    h = hashlib.sha256()

    def feed(p: Path) -> None:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)

    feed(path)
    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == init.EXTERNAL:
            for kv in init.external_data:
                if kv.key == "location":
                    locations.add(kv.value)
    for loc in sorted(locations):
        h.update(b"\0" + loc.encode())
        feed(path.parent / loc)
    return h.hexdigest()


def device_info() -> tp.Dict[str, tp.Any]:
    """GPU name, compute capability, driver / CUDA / TensorRT versions, from whatever is installed
    (tensorrt, cuda-python, nvidia-smi); {} when none of them is."""
    info: tp.Dict[str, tp.Any] = {}
    sources = []
    try:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is not None:
            import tensorrt as trt

            info["trt_version"] = str(trt.__version__)
            sources.append("tensorrt")
    except Exception:
        pass
    cudart = _cuda_python_runtime()
    if cudart is not None:
        try:
            err, n = cudart.cudaGetDeviceCount()
            if int(err) == 0 and n > 0:
                err, prop = cudart.cudaGetDeviceProperties(0)
                if int(err) == 0:
                    name = prop.name
                    if isinstance(name, (bytes, bytearray)):
                        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
                    info["gpu_name"] = str(name).strip()
                    info["compute_capability"] = f"{prop.major}.{prop.minor}"
                err, drv = cudart.cudaDriverGetVersion()
                if int(err) == 0:
                    info["cuda_driver_api"] = f"{drv // 1000}.{(drv % 1000) // 10}"
                err, rt = cudart.cudaRuntimeGetVersion()
                if int(err) == 0:
                    info["cuda_runtime"] = f"{rt // 1000}.{(rt % 1000) // 10}"
                sources.append("cuda-python")
        except Exception:
            pass
    smi = shutil.which("nvidia-smi")
    if smi and ("driver_version" not in info or "gpu_name" not in info):
        for query in ("name,compute_cap,driver_version", "name,driver_version"):
            try:
                res = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                     text=True, timeout=15)
            except Exception:
                break
            if res.returncode != 0 or not res.stdout.strip():
                continue
            fields = [f.strip() for f in res.stdout.strip().splitlines()[0].split(",")]
            keys = query.split(",")
            got = dict(zip(keys, fields))
            info.setdefault("gpu_name", got.get("name"))
            if got.get("compute_cap"):
                info.setdefault("compute_capability", got["compute_cap"])
            info["driver_version"] = got.get("driver_version")
            sources.append("nvidia-smi")
            break
    if sources:
        info["source"] = sources
    return {k: v for k, v in info.items() if v not in (None, "")}
