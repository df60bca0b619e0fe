"""``jasco-run build-engines ENGINES_DIR``: build the TensorRT engines of an export folder on this machine.

Needs tensorrt (10.13+ or 11.x), polygraphy and cuda-python only — no torch, no onnxruntime, no checkpoint:
engines are not portable, so they are built on the GPU (Jetson, RTX box) that runs them, from the ONNX
graphs exported on a workstation.
"""
from __future__ import annotations

import argparse
import sys
import typing as tp
from pathlib import Path

from ..errors import JascoError

EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jasco-run build-engines",
                                description="Build TensorRT engines (FP16, strongly typed) from an export folder.")
    p.add_argument("engines", type=Path, metavar="ENGINES_DIR", help="folder written by jasco-export")
    p.add_argument("--graphs", help="comma list of graphs (default: the graphs the pipeline runs)")
    p.add_argument("--workspace-gb", type=float, help="TensorRT workspace limit in GB (8–16 GB boards: 1–2)")
    p.add_argument("--builder-optimization-level", type=int,
                   help="0..5 (TensorRT default 3); lower builds faster with less memory, slower engines")
    p.add_argument("--max-batch", type=int,
                   help="largest CFG batch per engine call (default: the export's; smaller engines, more chunks)")
    return p


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    from ..export_folder import ExportFolder
    from .build import BuildOptions, build_folder

    opts = BuildOptions(graphs=[g.strip() for g in a.graphs.split(",") if g.strip()] if a.graphs else None,
                        workspace_gb=a.workspace_gb, builder_optimization_level=a.builder_optimization_level,
                        max_batch=a.max_batch)
    try:
        opts.check()
        keys = build_folder(ExportFolder.open(a.engines), opts)
    except JascoError as exc:
        print(f"jasco-run build-engines: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("jasco-run build-engines: interrupted", file=sys.stderr)
        return 130
    print(f"built {len(keys)} engine(s) in {a.engines}: {', '.join(k.default_file for k in keys)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
