"""``jasco-run extract-chords`` and ``jasco-run extract-melody``: conditions from a recording, in the formats
``jasco-run --chords`` / ``--melody`` take.

    jasco-run extract-chords song.wav --out song.lab          # or .json; no --out: "C:0.23 Am:2.46 ..." on stdout
    jasco-run extract-melody song.wav --out melody.npy --plot melody.png

Two subcommands of the one ``jasco-run`` parser (:mod:`jasco_runtime.cli`, which owns exit codes, signals and
``--json`` errors): 0 done, 2 bad input or a missing ``extract`` extra (one line, nothing written), 130 Ctrl-C,
143 SIGTERM.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import typing as tp
from pathlib import Path

from ..cli.command import Command
from ..errors import InputError, JascoError
from ..files import atomic_write_all


def _audio_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", type=Path, help="the recording (wav, flac, ogg or mp3; any rate and channel count)")


def _output(path: Path, option: str, suffixes: tp.Sequence[str]) -> Path:
    """An output file we can create: known suffix, existing writable folder, not a folder itself."""
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{option} must end in {' or '.join(suffixes)}, got {path}")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} of {option} does not exist; create it first")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name such as {path / ('out' + suffixes[0])}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write to {path.parent} (permission denied); choose another {option}")
    return path


def _read(path: Path) -> tp.Tuple[tp.Any, int]:
    from ..audio_io import load_audio

    if not path.is_file():
        raise InputError(f"audio file {path} does not exist")
    return load_audio(path)


def _write(files: tp.Sequence[tp.Tuple[Path, bytes]]) -> None:
    try:
        atomic_write_all(files)
    except OSError as exc:
        raise JascoError(f"cannot write {', '.join(str(p) for p, _ in files)} ({exc.strerror or exc}); nothing was "
                         "written — free disk space or choose another path") from exc


def progression_text(progression: tp.Sequence[tp.Tuple[str, float]]) -> str:
    """``"C:0.232 Am:2.461 ..."``, the string form ``--chords`` takes."""
    return " ".join(f"{label}:{start:.3f}".replace(":-0.000", ":0.000") for label, start in progression)


# -- extract-chords ---------------------------------------------------------------------------------------------
def chords_arguments(p: argparse.ArgumentParser) -> None:
    _audio_arg(p)
    p.add_argument("--out", type=Path, help="FILE.lab (start end label lines) or FILE.json ([[label, start], ...]); "
                                            "default: the progression string on stdout")
    p.add_argument("--engines", type=Path, help="an export folder: spell labels as its chord vocabulary spells them "
                                                "(labels it lacks are warned about; they frame as UNK)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


def _chords(a: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    from .. import chords as chords_mod
    from . import chordino

    out = None if a.out is None else _output(a.out, "--out", (".lab", ".json"))
    mapping = None
    if a.engines is not None:
        from ..export_folder import ExportFolder

        folder = ExportFolder.open(a.engines)
        if not folder.has_chords:
            raise InputError(f"{a.engines} is a model without a chords conditioner; drop --engines")
        mapping = chords_mod.load_chord_mapping(folder.file("chords_mapping"))
    wav, sr = _read(a.audio)
    chordino.vamp_module()  # fail on a missing extra before any work
    progression = chordino.to_vocabulary(chordino.run_chordino(wav, sr), mapping)
    seconds = wav.shape[-1] / sr
    if out is not None:
        text = (chordino.write_lab(progression, seconds) if out.suffix.lower() == ".lab"
                else json.dumps([[label, start] for label, start in progression]) + "\n")
        _write([(out, text.encode("utf-8"))])
    return {"chords": [[label, start] for label, start in progression], "seconds": seconds,
            "out": None if out is None else str(out), "text": progression_text(progression)}


def _run_chords(a: argparse.Namespace) -> int:
    """``jasco-run extract-chords AUDIO [--out FILE.lab|FILE.json] [--engines DIR]``."""
    s = _chords(a)
    print(json.dumps(s, indent=2) if a.json else s["text"] if s["out"] is None else
          f"wrote {s['out']}: {len(s['chords'])} chord changes over {s['seconds']:.1f} s")
    return 0


# -- extract-melody ---------------------------------------------------------------------------------------------
def melody_arguments(p: argparse.ArgumentParser) -> None:
    _audio_arg(p)
    p.add_argument("--out", type=Path, required=True, help="FILE.npy: float32 [53, T], rows MIDI 43-95, one-hot")
    p.add_argument("--plot", type=Path, help="FILE.png: a piano roll of the melody (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


def _melody(a: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    import numpy as np

    from . import deps, reference, salience

    out = _output(a.out, "--out", (".npy",))
    plot = None if a.plot is None else _output(a.plot, "--plot", (".png",))
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise InputError("--plot needs matplotlib; `pip install matplotlib` or drop --plot") from exc
    wav, sr = _read(a.audio)
    deps.pitch_model_path(), deps.onnxruntime_module()  # fail on a missing extra before any work
    sal = reference.melody(wav, sr)
    buf = io.BytesIO()
    np.save(buf, sal)
    files = [(out, buf.getvalue())]
    if plot is not None:
        png = io.BytesIO()
        salience.plot_piano_roll(sal, png, title=f"lead melody of {a.audio.name}")
        files.append((plot, png.getvalue()))
    _write(files)
    voiced = int((sal.max(axis=0) > 0).sum())
    return {"out": str(out), "plot": None if plot is None else str(plot), "shape": list(sal.shape),
            "voiced_frames": voiced, "frame_rate": salience.FRAME_RATE}


def _run_melody(a: argparse.Namespace) -> int:
    """``jasco-run extract-melody AUDIO --out FILE.npy [--plot FILE.png]``."""
    s = _melody(a)
    print(json.dumps(s, indent=2) if a.json else f"wrote {s['out']}" + (f" and {s['plot']}" if s["plot"] else "")
          + f": [53, {s['shape'][1]}] at 50 frames/s, {s['voiced_frames']} voiced frames")
    return 0


CHORDS_COMMAND = Command("extract-chords", "chords of a recording (Chordino), in the formats --chords takes",
                         chords_arguments, _run_chords)
MELODY_COMMAND = Command("extract-melody", "the lead melody of a recording as the [53, T] salience --melody takes",
                         melody_arguments, _run_melody)
