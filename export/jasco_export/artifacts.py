"""The artifacts of one graph: the fp32 ONNX export, then each requested precision the graph declares (mixed
fp16; int8 for the flow step), each registered in the folder with its digests as it is written."""
from __future__ import annotations

import typing as tp
from pathlib import Path

from jasco_runtime.export_folder import ArtifactKey, Backend, ExportFolder, Precision

from .graphs import onnx_export
from .graphs.spec import GraphSpec
from . import progress

ONNX = Backend.ONNXRUNTIME


def export_artifacts(folder: ExportFolder, spec: GraphSpec, precisions: tp.Sequence[str], opset: int,
                     num_heads: int) -> tp.List[ArtifactKey]:
    """fp32 ONNX, then each of ``precisions`` the graph declares (mixed fp16, int8); returns the keys written."""
    name, tmp = spec.name, folder.folder
    progress.log(f"exporting {name} (fp32 ONNX, opset {opset})")
    fp32 = ArtifactKey(name, Precision.FP32, ONNX)
    path = onnx_export.export_graph(spec, tmp / fp32.default_file, opset)
    folder.add_artifact(fp32, path.name, save=False)
    keys = [fp32]
    if Precision.FP16 in precisions and spec.fp16:
        progress.log(f"converting {name} to mixed fp16")
        key = ArtifactKey(name, Precision.FP16, ONNX)
        info = onnx_export.convert_fp16(path, tmp / key.default_file)
        folder.add_artifact(key, save=False, **info)
        keys.append(key)
    if Precision.INT8 in precisions and Precision.INT8 in spec.precisions:
        progress.log(f"quantising {name} to int8 (attention fused, dynamic int8 linears) for ONNX Runtime CPU")
        key = ArtifactKey(name, Precision.INT8, ONNX)
        info = int8_flow_step(path, tmp / key.default_file, num_heads)
        folder.add_artifact(key, save=False, **info)
        keys.append(key)
    return keys


def int8_flow_step(fp32_path: Path, dst: Path, num_heads: int) -> tp.Dict[str, tp.Any]:
    """Fused-attention copy of the fp32 flow step, then its int8 dynamic quantisation (see graphs/quantize.py)."""
    from .graphs.fusion import fuse_attention
    from .graphs.quantize import fp32_nodes, quantize_flow_step_int8

    fused = dst.parent / f".{fp32_path.stem}-fused.onnx"
    try:
        fusion = fuse_attention(fp32_path, fused, num_heads)
        recipe = quantize_flow_step_int8(fused, dst, exclude=fp32_nodes(fused))
    finally:
        for f in dst.parent.glob(fused.name + "*"):
            f.unlink()
    return {**recipe, "attention_fusion": fusion}
