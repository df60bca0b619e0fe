"""Benchmark cache glue: add the fused fp32 and int8 flow steps to a cached export folder and register them
in its manifest (the passes themselves live in :mod:`jasco_export.graphs.fusion` / :mod:`jasco_export.graphs.quantize`)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from jasco_export.graphs.fusion import fuse_attention
from jasco_export.graphs.quantize import KEEP_FP32_PATTERNS, fp32_nodes, quantize_flow_step_int8

logger = logging.getLogger(__name__)
FUSED_FILE = "flow_step.fp32-fused.onnx"
INT8_FILE = "flow_step.int8.onnx"


def ensure_fused(export_dir: Path) -> Path:
    """Add the fused fp32 flow step to an export folder (once), registered as ``onnx-fp32-fused``."""
    dst = export_dir / FUSED_FILE
    mpath = export_dir / "manifest.json"
    manifest = json.loads(mpath.read_text())
    entry = manifest["graphs"]["flow_step"]
    if not dst.is_file():
        src = export_dir / entry["files"]["onnx-fp32"]
        logger.info("fusing attention in %s", src)
        info = fuse_attention(src, dst, int(manifest["dims"]["heads"]))
        manifest.setdefault("precision", {})["fp32-fused"] = {"flow_step": info}
    entry["files"]["onnx-fp32-fused"] = FUSED_FILE
    mpath.write_text(json.dumps(manifest, indent=2))
    return dst


def ensure_int8(export_dir: Path) -> Path:
    """Add ``flow_step.int8.onnx`` to an export folder and register it in its manifest as ``onnx-int8``,
    so ``JascoPipeline.from_dir(..., precision='int8')`` picks it for the flow step (the other graphs
    fall back to fp32, the runtime's rule for graphs without that precision).

    Quantised from the attention-fused fp32 graph (:mod:`jasco_export.graphs.fusion`); rebuilt when the recipe
    (source graph, fp32 patterns) changed since the cached copy was made.
    """
    src = ensure_fused(export_dir)
    dst = export_dir / INT8_FILE
    manifest_path = export_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["graphs"]["flow_step"]
    old = manifest.get("precision", {}).get("int8", {}).get("flow_step", {})
    if not dst.is_file() or old.get("source") != src.name or old.get("kept_fp32_patterns") != list(KEEP_FP32_PATTERNS):
        logger.info("quantising %s to int8", src)
        recipe = quantize_flow_step_int8(src, dst, exclude=fp32_nodes(src))
        manifest.setdefault("precision", {})["int8"] = {"flow_step": {**recipe, "source": src.name}}
    entry["files"]["onnx-int8"] = INT8_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return dst
