"""``jasco-export verify ENGINES_DIR [--model ID|DIR]``: re-run the parity gate on an existing export folder.

Fresh PyTorch references from the model (by default the one the manifest names), then every artifact the
manifest lists (ONNX graphs in each precision, int8, TensorRT engines built here) through the runtime's
``open_engine``.  Exit 0 when everything passes, 1 on any failure (fail-closed), 2 on bad input.
"""
from __future__ import annotations

import argparse
import typing as tp
from pathlib import Path

from jasco_runtime.cli.command import Parser
from jasco_runtime.export_folder import ExportFolder
from jasco_runtime.verify import VerificationFailed, failures

from ..errors import InputError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="jasco-export verify", description=__doc__.split("\n\n")[0])
    p.add_argument("engines", type=Path, help="export folder (holds manifest.json)")
    p.add_argument("--model", help="hub id or folder of the checkpoint (default: the manifest's model id)")
    p.add_argument("--t5", help="T5 hub id or folder (default: the manifest's)")
    p.add_argument("--revision", help="hub revision (default: the manifest's)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end generation check")
    return p


def main(argv: tp.Sequence[str]) -> int:
    from ..progress import log as _log
    from ..graphs.spec import declare_graphs
    from ..reference.jasco import JASCO
    from .gate import reverify

    a = parser().parse_args(argv)
    folder = ExportFolder.open(a.engines)
    model = a.model or folder.model_id
    mapping = folder.file("chords_mapping") if folder.has_chords else None
    _log(f"loading {model} for fresh references")
    jasco = JASCO.get_pretrained(model, device="cpu", chords_mapping_path=str(mapping) if mapping else None,
                                 t5=a.t5 or folder.model.t5, revision=a.revision or folder.model.revision)
    sep = folder.conditioners.get("drums", {}).get("separator") if folder.has_drums else None
    if sep:  # the separator the folder was exported with (its demucs name or file)
        from ..separator import resolve_separator

        jasco.separator = resolve_separator(sep["name"], True, _log).bag  # type: ignore[union-attr]
    exported = folder.export
    graphs = declare_graphs(jasco, max_batch=exported.max_batch if exported else 6,
                            max_text_tokens=exported.max_text_tokens if exported else 128,
                            max_duration=folder.max_duration)
    unknown = set(folder.graphs) - set(graphs)
    if unknown:
        raise InputError(f"{folder.folder} has graphs {sorted(unknown)} that {model} does not declare; is it the right --model?")
    report = reverify(jasco, {k: v for k, v in graphs.items() if k in folder.graphs}, folder,
                      end_to_end=not a.no_e2e, log=_log)
    if not report["passed"]:
        raise VerificationFailed(f"verification failed: {failures(report)} (table above; report in {folder.folder / 'parity.json'})")
    _log(f"verified {len(folder.artifacts())} artifacts of {folder.folder}: PASSED")
    return 0
