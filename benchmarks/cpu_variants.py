"""Benchmark cache glue: add the fused fp32 and int8 flow steps to a cached export folder through its
:class:`~jasco_runtime.export_folder.ExportFolder` (the passes live in :mod:`jasco_export.graphs.fusion` /
:mod:`jasco_export.graphs.quantize`)."""
from __future__ import annotations

import logging
from pathlib import Path

from jasco_export.graphs.fusion import fuse_attention
from jasco_export.graphs.quantize import KEEP_FP32_PATTERNS, fp32_nodes, quantize_flow_step_int8
from jasco_runtime.export_folder import ArtifactKey, ExportFolder

logger = logging.getLogger(__name__)
FUSED = ArtifactKey("flow_step", "fp32", "onnx", variant="fused")
INT8 = ArtifactKey("flow_step", "int8", "onnx")


def ensure_fused(export_dir: Path) -> Path:
    """Add the attention-fused fp32 flow step to an export folder (once) as ``onnx-fp32+fused``."""
    folder = ExportFolder.open(export_dir)
    if not folder.has(FUSED) or not folder.path(FUSED).is_file():
        src = folder.path(ArtifactKey("flow_step", "fp32", "onnx"))
        logger.info("fusing attention in %s", src)
        info = fuse_attention(src, folder.folder / FUSED.default_file, int(folder.raw["dims"]["heads"]))
        folder.add_artifact(FUSED, attention_fusion=info)
    return folder.path(FUSED)


def ensure_int8(export_dir: Path) -> Path:
    """Add the int8 flow step (quantised from the fused fp32 graph) to an export folder as ``onnx-int8``, so
    ``JascoPipeline.from_dir(..., precision='int8')`` picks it; rebuilt when the recipe (source graph, fp32
    patterns) changed since the cached copy was made."""
    src = ensure_fused(export_dir)
    folder = ExportFolder.open(export_dir)
    old = folder.artifact(INT8).info if folder.has(INT8) else {}
    if (not folder.has(INT8) or not folder.path(INT8).is_file() or old.get("source") != src.name
            or old.get("kept_fp32_patterns") != list(KEEP_FP32_PATTERNS)):
        logger.info("quantising %s to int8", src)
        recipe = quantize_flow_step_int8(src, folder.folder / INT8.default_file, exclude=fp32_nodes(src))
        folder.add_artifact(INT8, **recipe, source=src.name)
    return folder.path(INT8)
