"""Trace the declared graphs to ONNX (fp32), fold weight norm, check, and convert to mixed fp16.

Large graphs (the 1B flow step is ~4 GB in fp32) are written with external data, which ONNX Runtime
and TensorRT's ``parse_from_file`` read from the same folder.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import typing as tp
import warnings
from pathlib import Path

import torch

from .spec import GraphSpec

logger = logging.getLogger(__name__)
TWO_GB = 2 ** 31 - 1


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


def export_graph(spec: GraphSpec, path: Path, opset: int = 17) -> Path:
    """Export one graph to ``path`` (fp32) with its dynamic axes; external data when > 2 GB."""
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
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > TWO_GB * 0.9
    import onnx

    # trace into a scratch folder: for > 2 GB models torch writes one external file per tensor there;
    # the final graph gets a single ``<name>.data`` beside it (what ORT and parse_from_file expect)
    with tempfile.TemporaryDirectory(prefix=".trace-", dir=path.parent) as scratch:
        raw = Path(scratch) / path.name
        with weight_norm_folded(module), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), input_names=[s.name for s in spec.inputs],
                              output_names=[s.name for s in spec.outputs], dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(raw), load_external_data=True)
    for f in path.parent.glob(path.name + ".data"):
        f.unlink()
    if big:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
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


def convert_fp16(src: Path, dst: Path, keep_fp32: tp.Sequence[str] = FP32_OP_TYPES,
                 keep_nodes: tp.Sequence[str] = FP32_NODE_PATTERNS) -> tp.Dict[str, tp.Any]:
    """Mixed-precision copy of an fp32 graph: fp16 weights/activations with fp32 islands.

    Uses ONNX Runtime's ``transformers.float16.convert_float_to_float16`` with an op-type block list
    and a node-name block list; ``keep_io_types`` keeps the graph I/O float32 so the runtime needs no
    casts.  Returns what was kept in fp32 (recorded in the manifest).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src), load_external_data=True)
    del model.graph.value_info[:]  # stale fp32 value_info confuses the converter
    blocked_nodes = [n.name for n in model.graph.node if any(p in n.name for p in keep_nodes)]
    blocked_types = sorted({n.op_type for n in model.graph.node if n.op_type in keep_fp32})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(keep_fp32),
                                             node_block_list=blocked_nodes)
    _toposort(converted.graph)
    big = converted.ByteSize() > TWO_GB * 0.9 if not big_model(model) else True
    for f in dst.parent.glob(dst.name + ".data"):
        f.unlink()
    onnx.save_model(converted, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=dst.name + ".data" if big else None)
    onnx.checker.check_model(str(dst))
    return {"fp32_op_types": blocked_types, "fp32_nodes": len(blocked_nodes),
            "fp32_node_patterns": list(keep_nodes), "tool": "onnxruntime.transformers.float16", "keep_io_types": True}


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


def big_model(model: tp.Any) -> bool:
    return sum(t.ByteSize() for t in model.graph.initializer) > TWO_GB * 0.9


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
