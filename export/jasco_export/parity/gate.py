"""The parity gate: the PyTorch reference writes the golden set, then every artifact is verified on it.

The check itself is :func:`jasco_runtime.verify.verify_folder` (torch-free, the same code ``jasco-run
verify`` runs on an edge target); this module adds the reference side.  Gates and fail-closed rules: see
:mod:`jasco_runtime.verify`.
"""
from __future__ import annotations

import gc
import json
import tempfile
import typing as tp
from pathlib import Path

from jasco_runtime.export_folder import GOLDEN_DIR, ExportFolder
from jasco_runtime.files import atomic_write_text
from jasco_runtime.golden import load_golden
from jasco_runtime.verify import format_table, verify_folder

from ..graphs.spec import GraphSpec
from .golden import write_golden_set


def cuda_providers() -> tp.Optional[tp.List[str]]:
    """ONNX Runtime CUDA for the check when it is installed (fp16 graphs are meant for it), else CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ["cuda", "cpu"] if "CUDAExecutionProvider" in ort.get_available_providers() else ["cpu"]


def save_report(folder: ExportFolder, report: tp.Dict[str, tp.Any], name: str) -> Path:
    """Write ``<name>.json`` into the folder and register it in the manifest."""
    path = folder.folder / f"{name}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    folder.add_file(name, path.name)
    return path


def reverify(jasco: tp.Any, graphs: tp.Dict[str, GraphSpec], folder: ExportFolder, end_to_end: bool = True,
             log: tp.Callable[[str], None] = print) -> tp.Dict[str, tp.Any]:
    """``jasco-export verify``: fresh references from ``jasco`` (in a temp folder; the folder's own golden set
    is left as it is), then every artifact of ``folder``; the report replaces ``parity.json``."""
    with tempfile.TemporaryDirectory(prefix=".golden-", dir=folder.folder) as tmp:
        record = write_golden_set(jasco, graphs, Path(tmp), end_to_end=end_to_end, log=log)
        golden = load_golden(folder, Path(tmp), record)
        gc.collect()
        report = verify_folder(folder, golden=golden, providers=cuda_providers(), end_to_end=end_to_end, log=log)
    report["source"] = f"jasco-export verify (fresh PyTorch references from {jasco.name})"
    log("\n" + format_table(report["rows"]))
    save_report(folder, report, "parity")
    return report


__all__ = ["reverify", "save_report", "cuda_providers", "GOLDEN_DIR"]
