"""Attention fusion for ONNX Runtime on CPU: the ``fp32-fused`` flow step.

torch's ONNX export decomposes ``scaled_dot_product_attention`` into Reshape / Transpose / scaled
MatMul / Softmax / MatMul / Transpose / Reshape, and keeps the three bias-free q, k, v projections as
separate MatMuls. ONNX Runtime's own optimiser does not recognise that pattern (nor does
``onnxruntime.transformers.optimizer`` with ``model_type='bert'``: it only fuses Gelu and
SkipLayerNormalization here). This pass rewrites every attention block of the flow step:

- the decomposed attention → one ``com.microsoft.MultiHeadAttention`` (no mask, scale 1/√head_dim, the
  SDPA default), whose CPU kernel is tiled; measured ≈ 25 % faster than the decomposed ops at 400M size;
- self-attention: the q, k, v weights are concatenated into one [dim, 3·dim] MatMul followed by a Split
  (one larger GEMM instead of three; ≈ 9 % faster for the block).

Only blocks of the expected shape are rewritten (bias-free projections feeding the head reshape, one
Softmax, no mask or q/k norm); anything else is left as exported. Numerics: the same products in another order
(≈ 1e-6 relative). Used by ``jasco-export --precision int8`` (the int8 graph is quantised from the fused one).
"""
from __future__ import annotations

import logging
import re
import time
import typing as tp
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _consumers(graph: tp.Any) -> tp.Dict[str, tp.List[tp.Any]]:
    out: tp.Dict[str, tp.List[tp.Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _eliminate_dead(graph: tp.Any) -> int:
    """Drop nodes whose outputs nobody reads, then unused initializers; returns nodes removed."""
    removed = 0
    keep_out = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | keep_out
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return removed


def fuse_attention(src: Path, dst: Path, num_heads: int) -> tp.Dict[str, tp.Any]:
    """Write the fused copy of the fp32 flow-step graph ``src`` to ``dst``; returns what was done."""
    import onnx
    from onnx import helper, numpy_helper

    t0 = time.perf_counter()
    model = onnx.load(str(src))
    g = model.graph
    by_name = {n.name: n for n in g.node}
    inits = {i.name: i for i in g.initializer}
    cons = _consumers(g)
    prefixes = sorted({n.name[: -len("out_proj/MatMul")] for n in g.node
                       if re.search(r"/(self_attn|cross_attention)/out_proj/MatMul$", n.name)})
    fused_self = fused_cross = 0
    skipped: tp.List[str] = []
    new_nodes: tp.List[tp.List[tp.Any]] = []
    for p in prefixes:
        proj = [by_name.get(p + s) for s in ("MatMul", "MatMul_1", "MatMul_2")]
        out = by_name.get(p + "out_proj/MatMul")
        ok = all(n is not None and n.op_type == "MatMul" and n.input[1] in inits for n in proj) and out is not None
        # the projections feed only the head split (Reshape, plus Shape for its dynamic dims); the block
        # has exactly one Softmax; anything else (q/k LayerNorm, biases, masks) is left alone
        ok = ok and all({c.op_type for c in cons.get(n.output[0], [])} <= {"Reshape", "Shape"}
                        and sum(c.op_type == "Reshape" for c in cons.get(n.output[0], [])) == 1 for n in proj)
        block = [n for n in g.node if n.name.startswith(p) and "/out_proj/" not in n.name]
        ok = ok and sum(n.op_type == "Softmax" for n in block) == 1 and not any(
            n.op_type in ("LayerNormalization", "Add", "Where") for n in block)
        if not ok:
            skipped.append(p)
            continue
        q, k, v = proj
        added = []
        if q.input[0] == k.input[0] == v.input[0]:  # self-attention: one packed projection
            ws = [numpy_helper.to_array(inits[n.input[1]]) for n in proj]
            packed = numpy_helper.from_array(np.concatenate(ws, axis=1).astype(ws[0].dtype), p + "qkv.weight")
            sizes = numpy_helper.from_array(np.array([w.shape[1] for w in ws], np.int64), p + "qkv.split")
            g.initializer.extend([packed, sizes])
            added.append(helper.make_node("MatMul", [q.input[0], packed.name], [p + "qkv"], name=p + "qkv/MatMul"))
            added.append(helper.make_node("Split", [p + "qkv", sizes.name], [q.output[0], k.output[0], v.output[0]],
                                          name=p + "qkv/Split", axis=-1))
            for n in proj:
                g.node.remove(n)
            fused_self += 1
        else:
            fused_cross += 1
        added.append(helper.make_node("MultiHeadAttention", [q.output[0], k.output[0], v.output[0]], [out.input[0]],
                                      name=p + "MultiHeadAttention", domain="com.microsoft", num_heads=int(num_heads)))
        new_nodes.append(added)
    # the decomposed attention producing each out_proj input is now dead: drop it, then insert the new
    # nodes just before their out_proj (keeps the node list topologically sorted)
    for added in new_nodes:
        target = added[-1].output[0]
        for n in list(g.node):
            if target in n.output:
                g.node.remove(n)
    for added in new_nodes:
        out_node = next(n for n in g.node if added[-1].output[0] in n.input)
        pos = list(g.node).index(out_node)
        for j, n in enumerate(added):
            g.node.insert(pos + j, n)
    removed = _eliminate_dead(g)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    del g.value_info[:]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    big = sum(i.ByteSize() for i in g.initializer) > 1.8e9  # protobuf's 2 GB limit: weights go beside
    for f in dst.parent.glob(tmp.name + ".data"):
        f.unlink()
    onnx.save_model(model, str(tmp), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=dst.name + ".data" if big else None)
    tmp.replace(dst)
    return {"pass": "jasco_export.fusion.fuse_attention", "self_attention_fused": fused_self,
            "cross_attention_fused": fused_cross, "blocks_left_as_exported": skipped, "nodes_removed": removed,
            "seconds": time.perf_counter() - t0}
