"""Reduced-precision CPU flow step: ONNX Runtime dynamic int8 quantisation of the fp32 graph.

Input: the attention-fused fp32 graph (:mod:`jasco_export.fusion`). Weights of every MatMul with a
constant right-hand side (the linear layers, except the few listed in ``KEEP_FP32_PATTERNS``) become int8 per output
channel (symmetric); activations are quantised to uint8 per tensor at run time
(``DynamicQuantizeLinear``), the products run as ``MatMulInteger`` (u8·s8 → s32; AVX-512 VNNI / AVX-VNNI
kernels in MLAS) and are rescaled to fp32. Attention (MultiHeadAttention), LayerNorm and GELU stay fp32. No calibration data is needed.

bf16 is not offered for ONNX Runtime: its CPU execution provider has no bf16 MatMul kernels on x86
(only the Arm fast-math path); the torch bf16 autocast variant of the benchmark shows what bf16 gives.
"""
from __future__ import annotations

import logging
import re
import time
import typing as tp
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

# MatMuls kept fp32: together < 0.5 % of the flow step's FLOPs, but each one alone, quantised, adds about
# 1e-2 relative error to the vector field (400M, measured by fake-quantising one group at a time): the
# input embedding, the time-embedding projection, the output projection (LayerNorm output → 128 dims),
# and the cross-attention keys/values (computed from the L text rows + time embedding only).
KEEP_FP32_PATTERNS = (r"^/flow/emb/", r"^/flow/temb", r"^/flow/linear/", r"/cross_attention/MatMul_[12]$")


def fp32_nodes(model_path: Path, patterns: tp.Sequence[str] = KEEP_FP32_PATTERNS) -> tp.List[str]:
    """Names of the MatMul nodes of ``model_path`` that match ``patterns`` (kept fp32)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    rx = [re.compile(p) for p in patterns]
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(r.search(n.name) for r in rx)]


def quantize_flow_step_int8(src: Path, dst: Path, exclude: tp.Sequence[str] = ()) -> tp.Dict[str, tp.Any]:
    """Write the int8 dynamic-quantised copy of ``src`` (an fp32 ONNX graph) to ``dst``; return its recipe."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a "consider pre-processing" warning on the root logger
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=list(exclude),
                             extra_options={"MatMulConstBOnly": True,
                                            # onnx shape inference has no types for com.microsoft ops
                                            "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    tmp.replace(dst)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weights": "int8 symmetric, per output channel",
            "activations": "uint8 asymmetric per tensor, dynamic (DynamicQuantizeLinear)",
            "ops": "MatMul with constant weights → MatMulInteger; attention products, norms, softmax, GELU fp32",
            "kept_fp32_nodes": len(exclude), "kept_fp32_patterns": list(KEEP_FP32_PATTERNS), "seconds": time.perf_counter() - t0}
