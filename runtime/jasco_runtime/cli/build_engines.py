"""``jasco-run build-engines ENGINES_DIR``: build the TensorRT engines of an export folder on this machine.

Needs tensorrt (10.13+ or 11.x), polygraphy and cuda-python only — no torch, no onnxruntime, no checkpoint:
engines are not portable, so they are built on the GPU (Jetson, RTX box) that runs them, from the ONNX
graphs exported on a workstation.
"""
from __future__ import annotations

import argparse
import json
import typing as tp
from pathlib import Path

from ..errors import InputError
from ..signals import signals_held
from .command import Command, late_signal_note
from .paths import input_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("engines", type=Path, metavar="ENGINES_DIR", help="folder written by jasco-export")
    p.add_argument("--graphs", help="comma list of graphs (default: the graphs the pipeline runs)")
    p.add_argument("--workspace-gb", type=float, help="TensorRT workspace limit in GB (8–16 GB boards: 1–2)")
    p.add_argument("--builder-optimization-level", type=int,
                   help="0..5 (TensorRT default 3); lower builds faster with less memory, slower engines")
    p.add_argument("--max-batch", type=int,
                   help="largest CFG batch per engine call (default: the export's; smaller engines, more chunks)")
    p.add_argument("--json", action="store_true", help="print {\"built\": [files]} (errors as a JSON object)")


def graph_list(text: tp.Optional[str]) -> tp.Optional[tp.List[str]]:
    """``--graphs a,b,a`` → ["a", "b"]: each graph once, in the order given (B22)."""
    if text is None:
        return None
    names = list(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))
    if not names:
        raise InputError(f"--graphs {text!r} names no graph; give a comma list such as flow_step,encodec_decoder")
    return names


def build_engines(a: argparse.Namespace) -> int:
    from ..export_folder import ExportFolder
    from ..tensorrt.build import BuildOptions, build_folder

    opts = BuildOptions(graphs=graph_list(a.graphs), workspace_gb=a.workspace_gb,
                        builder_optimization_level=a.builder_optimization_level, max_batch=a.max_batch)
    opts.check()
    input_folder(a.engines, "ENGINES_DIR", "give the folder jasco-export wrote")
    keys = build_folder(ExportFolder.open(a.engines), opts)
    with signals_held() as held:
        files = [k.default_file for k in keys]
        print(json.dumps({"built": files}) if a.json else
              f"built {len(keys)} engine(s) in {a.engines}: {', '.join(files)}", flush=True)
    late_signal_note("jasco-run build-engines", held.name, "the engines")
    return 0


COMMAND = Command("build-engines", "build the TensorRT engines of an export folder on this GPU", add_arguments,
                  build_engines, interrupted="the engine being built was not registered; engines finished before "
                                             "it are in the manifest", progress=True)
