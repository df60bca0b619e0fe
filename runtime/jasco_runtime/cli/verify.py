"""``jasco-run verify ENGINES_DIR [--backend …]``: check every artifact of a folder on its golden set.

No torch, no checkpoint: what a GPU server or an edge target runs after copying a folder or building its
TensorRT engines.  Prints the parity table, writes ``verify.json``; exit 0 passed, 1 failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import typing as tp
from pathlib import Path

from ..errors import InputError
from ..export_folder import Backend, ExportFolder
from ..files import atomic_write_text
from ..signals import signals_held
from .command import Command, late_signal_note
from .paths import input_folder, output_file

def selected_backends(choice: str) -> tp.Optional[tp.List[Backend]]:
    """``--backend`` → the backends verify runs (None: every one installed here)."""
    return None if choice == "auto" else list(Backend) if choice == "all" else [Backend.parse(choice)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("engines", type=Path, metavar="ENGINES_DIR", help="export folder (holds manifest.json and golden/)")
    p.add_argument("--backend", default="auto", choices=Backend.choices("auto") + ["all"],
                   help="auto: every backend installed here (others are listed as SKIP); tensorrt/onnxruntime: only "
                        "that one (an error if it is not installed); all: both, required")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"],
                   help="ONNX Runtime execution provider (default cpu); tensorrt: ONNX Runtime's TensorRT EP (TensorRT 10 "
                        "only, weakly typed: its fp16 artifacts are checked against the fp32 reference like all others)")
    p.add_argument("--out", type=Path, help="report path, a .json file (default ENGINES_DIR/verify.json)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end generation check")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")


def _check_provider(a: argparse.Namespace) -> None:
    """An ONNX Runtime provider that is not in this build is bad input, named once, before any artifact (V14)."""
    if a.provider in (None, "cpu") or selected_backends(a.backend) == [Backend.TENSORRT]:
        return
    from ..backends.onnxruntime_backend import resolve_providers

    try:
        resolve_providers([a.provider])  # InputError naming the provider and the fix
    except ImportError:  # no onnxruntime: verify_folder reports the backend as missing
        return


def verify(a: argparse.Namespace) -> int:
    from ..verify import VerificationFailed, failures, format_table, verify_folder

    input_folder(a.engines, "ENGINES_DIR", "give the folder jasco-export wrote")
    folder = ExportFolder.open(a.engines)
    out = a.out or folder.folder / "verify.json"
    if out.is_dir():  # V19: checked before the verification, not by the report's write after it
        raise InputError(f"--out {out} is a folder; give a report file such as {out / 'verify.json'}")
    output_file(out, "--out", out.suffix.lower())  # an existing folder, a missing parent, a name too long
    _check_provider(a)
    report = verify_folder(folder, backends=selected_backends(a.backend), providers=[a.provider] if a.provider else ["cpu"],
                           end_to_end=not a.no_e2e, log=(lambda m: None) if a.json else
                           (lambda m: print(f"[jasco-run verify] {m}", flush=True)))
    report["source"] = "jasco-run verify (stored golden set)"
    with signals_held() as held:  # the report is written and printed, or a signal's message says it was not
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2) if a.json else format_table(report["rows"]), flush=True)
        if report["passed"] and not a.json:
            print(f"verified {len(folder.artifacts())} artifacts of {folder.folder}: PASSED (report: {out})", flush=True)
    late_signal_note("jasco-run verify", held.name, "the report")
    if not report["passed"]:
        raise VerificationFailed(f"verification failed: {failures(report)} (report: {out})")
    return 0


COMMAND = Command("verify", "check every artifact of an export folder on its stored golden set", add_arguments,
                  verify, interrupted="no report was written")
