"""``jasco-run verify ENGINES_DIR [--backend …]``: check every artifact of a folder on its golden set.

No torch, no checkpoint: what a GPU server or an edge target runs after copying a folder or building its
TensorRT engines.  Prints the parity table, writes ``verify.json``; exit 0 passed, 1 failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import typing as tp
from pathlib import Path

from .errors import InputError
from .export_folder import ExportFolder
from .files import atomic_write_text
from .verify import VerificationFailed, failures, format_table, verify_folder

BACKENDS = {"auto": None, "onnxruntime": ["onnx"], "tensorrt": ["tensorrt"], "all": ["onnx", "tensorrt"]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jasco-run verify", description=__doc__.split("\n\n")[0])
    p.add_argument("engines", type=Path, help="export folder (holds manifest.json and golden/)")
    p.add_argument("--backend", default="auto", choices=sorted(BACKENDS),
                   help="auto: every backend installed here (others are listed as SKIP); tensorrt/onnxruntime: only "
                        "that one (an error if it is not installed); all: both, required")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"],
                   help="ONNX Runtime execution provider (default cpu); tensorrt: ONNX Runtime's TensorRT EP (TensorRT 10 "
                        "only, weakly typed: its fp16 artifacts are checked against the fp32 reference like all others)")
    p.add_argument("--out", type=Path, help="report path (default ENGINES_DIR/verify.json)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end generation check")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    return p


def main(argv: tp.Sequence[str]) -> int:
    a = parser().parse_args(argv)
    folder = ExportFolder.open(a.engines)
    out = a.out or folder.folder / "verify.json"
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise InputError(f"cannot write the report to {out}; pass --out PATH in a writable folder")
    report = verify_folder(folder, backends=BACKENDS[a.backend], providers=[a.provider] if a.provider else ["cpu"],
                           end_to_end=not a.no_e2e, log=(lambda m: None) if a.json else
                           (lambda m: print(f"[jasco-run verify] {m}", flush=True)))
    report["source"] = "jasco-run verify (stored golden set)"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if a.json else format_table(report["rows"]))
    if not report["passed"]:
        raise VerificationFailed(f"verification failed: {failures(report)} (report: {out})")
    if not a.json:
        print(f"verified {len(folder.artifacts())} artifacts of {folder.folder}: PASSED (report: {out})")
    return 0
