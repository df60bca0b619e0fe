"""The golden set of an export folder: PyTorch reference inputs and outputs, stored at export time.

``golden/<graph>.npz`` holds, per case (``random``: random inputs at mid-profile sizes; ``realistic``: what a
generation feeds the graph), ``<case>/in/<input>`` and ``<case>/out/<output>``; ``golden/e2e.npz`` holds one
Euler generation (2 prompts, chords, a 44.1 kHz stereo drum stem so the resampler is on the gated path) with
its initial noise and the reference latents and audio.  The manifest's ``golden`` record lists the files and
the generation settings.  ``verify`` runs every artifact on these, with neither torch nor the checkpoint.
"""
from __future__ import annotations

import typing as tp
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .export_folder import GOLDEN_DIR, ExportFolder, GoldenRecord

CASES = ("random", "realistic")


@dataclass
class GraphCase:
    inputs: tp.Dict[str, np.ndarray]
    outputs: tp.Dict[str, np.ndarray]


@dataclass
class EndToEndCase:
    prompts: tp.List[str]
    settings: tp.Dict[str, tp.Any]  # chords, cfg_coef_all, cfg_coef_txt, solver, steps, drums_sample_rate
    init_noise: np.ndarray
    drums: tp.Optional[np.ndarray]
    melody: tp.Optional[np.ndarray]
    latents: np.ndarray
    audio: np.ndarray


@dataclass
class GoldenSet:
    graphs: tp.Dict[str, tp.Dict[str, GraphCase]] = field(default_factory=dict)
    e2e: tp.Optional[EndToEndCase] = None


def _load_npz(path: Path) -> tp.Dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"golden file {path} is missing; copy the whole export folder, or regenerate the golden set "
                         "with `jasco-export verify DIR --model ID`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"golden file {path} is damaged ({type(exc).__name__}); copy the export folder again") from exc


def load_golden(folder: ExportFolder, golden_dir: tp.Optional[Path] = None,
                record: tp.Optional[GoldenRecord] = None) -> GoldenSet:
    """The golden set recorded in ``folder``'s manifest (or ``record`` + ``golden_dir``, for a fresh one)."""
    record = record if record is not None else folder.golden
    if not record:
        raise InputError(f"{folder.folder} has no golden set (exported by an older jasco-export?); re-export it, or "
                         f"create one with `jasco-export verify {folder.folder} --model ID`")
    base = Path(golden_dir) if golden_dir is not None else folder.folder / GOLDEN_DIR
    out = GoldenSet()
    for graph, rel in record.graphs.items():
        arrays = _load_npz(base / rel)
        cases = {}
        for case in CASES:
            ins = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{case}/in/")}
            outs = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{case}/out/")}
            if ins:
                cases[case] = GraphCase(ins, outs)
        out.graphs[graph] = cases
    e2e = record.e2e
    if e2e:
        arrays = _load_npz(base / e2e.file)
        out.e2e = EndToEndCase(list(e2e.prompts), dict(e2e.settings), arrays["init_noise"],
                               arrays.get("drums"), arrays.get("melody"), arrays["latents"], arrays["audio"])
    return out


def save_graph_case(path: Path, cases: tp.Mapping[str, GraphCase]) -> None:
    arrays = {}
    for case, gc in cases.items():
        arrays.update({f"{case}/in/{k}": v for k, v in gc.inputs.items()})
        arrays.update({f"{case}/out/{k}": v for k, v in gc.outputs.items()})
    np.savez_compressed(path, **arrays)


def save_e2e_case(path: Path, case: EndToEndCase) -> None:
    arrays = {"init_noise": case.init_noise, "latents": case.latents, "audio": case.audio}
    if case.drums is not None:
        arrays["drums"] = case.drums
    if case.melody is not None:
        arrays["melody"] = case.melody
    np.savez_compressed(path, **arrays)
