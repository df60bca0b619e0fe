"""Trace the declared graphs to ONNX (fp32), fold weight norm, check, and convert to mixed fp16.

Graphs with more than 256 MiB of weights (the 400M / 1B flow steps, T5-base) are written with external
data (``<file>.data``, one per graph, page-aligned), which ONNX Runtime and TensorRT's ``parse_from_file``
read from the same folder.  Memory: the weights are streamed to disk tensor by tensor at export and at
fp16 conversion; no step holds a second full copy of a graph's weights (issue 12).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import torch

from .spec import GraphSpec

logger = logging.getLogger(__name__)
TWO_GB = 2 ** 31 - 1  # protobuf limit of one .onnx file
EXTERNAL_DATA_BYTES = 2 ** 28  # above this a graph's weights go to <file>.data (never held as one proto)
SMALL_TENSOR_BYTES = 1024  # tensors below this stay inside the .onnx (as onnx.save's size_threshold)
ALIGN = 4096  # external data offsets are page-aligned


@contextlib.contextmanager
def weight_norm_folded(module: torch.nn.Module):
    """Temporarily replace weight-norm parametrizations by their plain tensors (no training-only ops)."""
    from torch.nn.utils import parametrize

    saved = []
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            saved.append((m, m.parametrizations.weight.original0.detach().clone(),
                          m.parametrizations.weight.original1.detach().clone()))
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    try:
        yield module
    finally:
        from torch.nn.utils.parametrizations import weight_norm

        for m, g, v in saved:
            weight_norm(m, name="weight")
            with torch.no_grad():
                m.parametrizations.weight.original0.copy_(g)
                m.parametrizations.weight.original1.copy_(v)


def _sizes_for_export(spec: GraphSpec) -> tp.Dict[str, int]:
    # trace with sizes ≠ 1 so no dynamic axis gets specialised away
    return {name: max(2, min(r.opt, r.max)) for name, r in spec.axes.items()}


def external_data(nbytes: int) -> bool:
    """Whether a graph with ``nbytes`` of weights keeps them in ``<file>.data`` (one file beside it)."""
    return nbytes > min(EXTERNAL_DATA_BYTES, TWO_GB * 0.9)


@contextlib.contextmanager
def _captured_initializers(store: tp.Dict[str, torch.Tensor]) -> tp.Iterator[None]:
    """Keep the name → tensor map the TorchScript exporter would serialise as initializers.

    ``torch.onnx.export`` (dynamo=False) serialises the whole ModelProto, weights included, in memory
    (C++ proto, its bytes, the Python copy, and a re-parse in ``_add_onnxscript_fn``: ~4 copies of a
    < 2 GB graph).  Exporting with ``export_params=False`` and taking the final initializers (after
    constant folding) from ``_jit_pass_onnx_deduplicate_initializers`` lets :func:`export_graph`
    stream them to disk instead.  Internal API of the TorchScript exporter (torch 2.13).
    """
    from torch import _C

    original = _C._jit_pass_onnx_deduplicate_initializers

    def capture(graph: tp.Any, params: tp.Dict[str, torch.Tensor], is_train: bool) -> tp.Dict[str, torch.Tensor]:
        out = original(graph, params, is_train)
        store.clear()
        store.update(out)
        return out

    _C._jit_pass_onnx_deduplicate_initializers = capture
    try:
        yield
    finally:
        _C._jit_pass_onnx_deduplicate_initializers = original


class ExternalDataWriter:
    """Appends tensors to one external data file (page-aligned offsets, so ONNX Runtime can map them)
    and points their TensorProtos at it."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self._f = open(path, "wb")

    def add(self, tensor: tp.Any, data: tp.Any) -> None:
        from onnx import TensorProto
        from onnx.external_data_helper import set_external_data

        pad = -self.offset % ALIGN
        self._f.write(b"\0" * pad)
        self.offset += pad
        n = self._f.write(memoryview(data).cast("B"))
        tensor.raw_data = b""  # set_external_data wants the field present; the data lives in the file
        set_external_data(tensor, self.path.name, offset=self.offset, length=n)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        self.offset += n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ExternalDataWriter":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()


def _initializer(name: str, tensor: torch.Tensor, writer: tp.Optional[ExternalDataWriter]) -> tp.Any:
    import onnx
    from onnx import helper, numpy_helper

    array = tensor.detach().contiguous().numpy()
    if writer is None or array.nbytes < SMALL_TENSOR_BYTES:
        return numpy_helper.from_array(array, name)
    proto = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
    writer.add(proto, array)
    return proto


def export_graph(spec: GraphSpec, path: Path, opset: int = 17) -> Path:
    """Export one graph to ``path`` (fp32) with its dynamic axes; weights in ``<file>.data`` when large.

    The weights are written tensor by tensor from the traced module's own (or constant-folded)
    tensors: no in-memory ModelProto holds them (see :func:`_captured_initializers`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    sample = spec.sample(_sizes_for_export(spec), gen)
    args = tuple(sample[s.name] for s in spec.inputs)
    dynamic_axes = {}
    for s in spec.inputs + spec.outputs:
        axes = {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
        if axes:
            dynamic_axes[s.name] = axes
    module = spec.module.eval()
    import onnx

    weights: tp.Dict[str, torch.Tensor] = {}
    # the weights are written inside weight_norm_folded: folded EnCodec weights alias tensors that
    # restoring the weight norm overwrites
    with tempfile.TemporaryDirectory(prefix=".trace-", dir=path.parent) as scratch, weight_norm_folded(module):
        raw = Path(scratch) / path.name
        with torch.no_grad(), warnings.catch_warnings(), _captured_initializers(weights):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), export_params=False, input_names=[s.name for s in spec.inputs],
                              output_names=[s.name for s in spec.outputs], dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(raw), load_external_data=False)  # the graph without its weights
        if any(p.numel() for p in module.parameters()) and not weights:
            raise RuntimeError("torch.onnx did not report the graph's initializers (TorchScript exporter internals "
                               "changed?); this exporter is tested with torch 2.13")
        # export_params=False declared the initializers as graph inputs: turn them back into initializers,
        # in the order torch writes them (AddInitializersIntoGraphProto: graph input order)
        names = [i.name for i in model.graph.input if i.name in weights]
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        data = path.with_name(path.name + ".data")
        data.unlink(missing_ok=True)
        big = external_data(sum(t.numel() * t.element_size() for t in weights.values()))
        with ExternalDataWriter(data) if big else contextlib.nullcontext() as writer:
            for name in names:
                model.graph.initializer.append(_initializer(name, weights.pop(name), writer))  # frees folded copies
        weights.clear()
    onnx.save_model(model, str(path))
    del model
    onnx.checker.check_model(str(path))  # from the path: works with external data
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    return path


# op types kept in fp32 inside fp16 graphs: normalisations, reductions and exponentials that overflow
# or lose too much in fp16, plus shape arithmetic (Range/Sin/Cos build the positional embeddings)
FP32_OP_TYPES = ("LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax", "Exp", "ReduceSum", "Erf",
                 "Range", "Sin", "Cos")
# node-name patterns kept in fp32: T5's feed-forward overflows fp16 (known T5 issue)
FP32_NODE_PATTERNS = ("DenseReluDense",)
FP16_MIN_POSITIVE, FP16_MAX_FINITE = 5.96e-08, 65504.0  # the converter's defaults (float16 subnormal min, max)


def convert_fp16(src: Path, dst: Path, keep_fp32: tp.Sequence[str] = FP32_OP_TYPES,
                 keep_nodes: tp.Sequence[str] = FP32_NODE_PATTERNS) -> tp.Dict[str, tp.Any]:
    """Mixed-precision copy of an fp32 graph: fp16 weights/activations with fp32 islands.

    Uses ONNX Runtime's ``transformers.float16.convert_float_to_float16`` with an op-type block list
    and a node-name block list; ``keep_io_types`` keeps the graph I/O float32 so the runtime needs no
    casts.  Returns what was kept in fp32 (recorded in the manifest).

    The converter runs on the graph without its external weights (it only retypes them); they are
    then streamed tensor by tensor from ``src``'s data file to ``dst``'s, cast with the converter's
    own ``convert_np_to_float16`` where it retyped them, so neither model is ever held in memory.
    """
    import onnx
    from onnxruntime.transformers import float16

    model = onnx.load(str(src), load_external_data=False)
    del model.graph.value_info[:]  # stale fp32 value_info confuses the converter
    blocked_nodes = [n.name for n in model.graph.node if any(p in n.name for p in keep_nodes)]
    blocked_types = sorted({n.op_type for n in model.graph.node if n.op_type in keep_fp32})
    src_types = {t.name: t.data_type for t in model.graph.initializer}
    with warnings.catch_warnings(), _value_info_from_dims(float16):
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, FP16_MIN_POSITIVE, FP16_MAX_FINITE, keep_io_types=True,
                                                     op_block_list=list(keep_fp32), node_block_list=blocked_nodes)
    _toposort(converted.graph)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    external = [t for t in converted.graph.initializer if onnx.external_data_helper.uses_external_data(t)]
    if external:
        with ExternalDataWriter(data) as writer:
            for t in external:
                info = onnx.external_data_helper.ExternalDataInfo(t)
                with open(src.parent / info.location, "rb") as f:
                    f.seek(info.offset or 0)
                    raw = f.read(info.length) if info.length else f.read()
                if src_types[t.name] == onnx.TensorProto.FLOAT and t.data_type == onnx.TensorProto.FLOAT16:
                    array = float16.convert_np_to_float16(np.frombuffer(raw, np.float32), FP16_MIN_POSITIVE,
                                                          FP16_MAX_FINITE)
                    writer.add(t, array)
                else:
                    writer.add(t, raw)
                del raw
    onnx.save_model(converted, str(dst))
    onnx.checker.check_model(str(dst))
    return {"fp32_op_types": blocked_types, "fp32_nodes": len(blocked_nodes),
            "fp32_node_patterns": list(keep_nodes), "tool": "onnxruntime.transformers.float16", "keep_io_types": True}


@contextlib.contextmanager
def _value_info_from_dims(float16: tp.Any) -> tp.Iterator[None]:
    """The converter reads an initializer's shape with ``numpy_helper.to_array`` (which would load its
    external data, relative to the working directory); the shape is its ``dims``."""
    from onnx import helper

    original = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = original


def _toposort(graph: tp.Any) -> None:
    """Re-order nodes topologically (the converter appends the casts it inserts at the end)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    ordered = []
    while nodes:
        rest = []
        for n in nodes:
            if all(i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(nodes):
            raise RuntimeError("fp16 conversion produced a graph with a cycle or a dangling input")
        nodes = rest
    del graph.node[:]
    graph.node.extend(ordered)


def graph_ops(path: Path) -> tp.Dict[str, int]:
    """op_type → count over the main graph (for the TensorRT compatibility check)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: tp.Dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def file_size(path: Path) -> int:
    total = path.stat().st_size
    for f in path.parent.glob(path.name + ".data"):
        total += f.stat().st_size
    return total
