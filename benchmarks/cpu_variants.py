"""Benchmark cache glue: the attention-fused fp32 flow step, a benchmark-only artifact, added to a cached
export folder through its :class:`~jasco_runtime.export_folder.ExportFolder` (the pass lives in
:mod:`jasco_export.graphs.fusion`). The int8 flow step is the exporter's own (``--precision int8``)."""
from __future__ import annotations

import logging
from pathlib import Path

from jasco_export.graphs.fusion import fuse_attention
from jasco_runtime.export_folder import ArtifactKey, ExportFolder

logger = logging.getLogger(__name__)
FUSED = ArtifactKey("flow_step", "fp32", "onnx", variant="fused")


def ensure_fused(export_dir: Path) -> Path:
    """Add the attention-fused fp32 flow step to an export folder (once) as ``onnx-fp32+fused``."""
    folder = ExportFolder.open(export_dir)
    if not folder.has(FUSED) or not folder.path(FUSED).is_file():
        src = folder.path(ArtifactKey("flow_step", "fp32", "onnx"))
        logger.info("fusing attention in %s", src)
        info = fuse_attention(src, folder.folder / FUSED.default_file, folder.dims.heads)
        folder.add_artifact(FUSED, attention_fusion=info)
    return folder.path(FUSED)
