"""Chord progressions → per-frame chord indices (numpy only; shared by the runtime and the reference).

Framing follows audiocraft/utils/utils.py ``construct_frame_chords`` exactly (BEHAVIOUR.md §13): frame
``f`` sits at ``f / frame_rate`` seconds; changes are popped from the front of the list, in list order,
while ``f / frame_rate >= start``; an empty label means 'N'. Unknown labels differ on purpose
(BEHAVIOUR.md §14): audiocraft raises ``KeyError``; here an enharmonic respelling is tried
(Db → C#, A#/D → Bb/D, …) and else the label maps to 'UNK' with a warning.

Accepted progression formats (:func:`parse_chords`): ``"C:0 F:4 G:6"``, ``"(C, 0.0), (D, 2.0)"``,
a ``.lab`` file (``start end label`` or ``start label`` per line, as chord extractors write) and a ``.json``
file (``[["C", 0.0], ...]``, ``[{"chord": "C", "start": 0.0}, ...]`` or ``{"chords": [...]}``).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import pickle
import re
import typing as tp
from pathlib import Path

import numpy as np

from .checks import number, parse_number
from .errors import InputError

logger = logging.getLogger(__name__)
Progression = tp.List[tp.Tuple[str, float]]
UNKNOWN = "UNK"
NO_CHORD = "N"

# pitch class → every spelling a chord label may use for it
_SPELLINGS = [("C", "B#"), ("C#", "Db"), ("D",), ("D#", "Eb"), ("E", "Fb"), ("F", "E#"), ("F#", "Gb"), ("G",),
              ("G#", "Ab"), ("A",), ("A#", "Bb"), ("B", "Cb")]
_ENHARMONIC = {name: names for names in _SPELLINGS for name in names}
# quality spellings other tools write → the Chordino spelling of the released mapping
_QUALITY_ALIASES = {"maj": "", "M": "", "min": "m", "-": "m", "M7": "maj7", "Δ": "maj7", "Δ7": "maj7",
                    "+": "aug", "°": "dim", "o": "dim", "ø": "m7b5", "m7-5": "m7b5", "min7": "m7", "min6": "m6"}
_LABEL = re.compile(r"^([A-G][#b]?)([^/]*)(?:/([A-G][#b]?))?$")


# -- mapping files ---------------------------------------------------------------------------------
class _RefusedPickle(pickle.UnpicklingError):
    """The pickle names a global (a class or function): it would run code."""


class _DictOnlyUnpickler(pickle.Unpickler):
    """The mapping pickle is a plain {str: int} dict: refuse anything that would import code."""

    def find_class(self, module: str, name: str) -> tp.Any:
        raise _RefusedPickle(f"it imports {module}.{name}")


def load_chord_mapping(path: tp.Union[str, os.PathLike]) -> tp.Dict[str, int]:
    """Read audiocraft's ``chord_to_index_mapping.pkl`` or our exported ``chords_mapping.json``."""
    p = Path(path)
    try:
        if p.suffix == ".json":
            mapping = json.loads(p.read_text())
        else:
            with open(p, "rb") as f:
                mapping = _DictOnlyUnpickler(f).load()
    except _RefusedPickle as exc:
        raise InputError(f"chord mapping {p} was refused because it contains code ({exc}); the mapping is a plain "
                         "{label: index} dict — pass audiocraft's assets/chord_to_index_mapping.pkl") from exc
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"cannot read chord mapping {p} ({exc}); pass audiocraft's "
                         "assets/chord_to_index_mapping.pkl") from exc
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in mapping.items()):
        raise InputError(f"chord mapping {p} is not a {{label: index}} dict; pass audiocraft's "
                         "assets/chord_to_index_mapping.pkl")
    if NO_CHORD not in mapping:
        raise InputError(f"chord mapping {p} has no 'N' (no chord) entry; pass audiocraft's chord_to_index_mapping.pkl")
    return mapping


def save_chord_mapping_json(mapping: tp.Mapping[str, int], path: tp.Union[str, os.PathLike]) -> None:
    """Write the mapping as JSON (insertion order kept) for the torch- and pickle-free runtime."""
    Path(path).write_text(json.dumps(dict(mapping), indent=0))


# -- labels ----------------------------------------------------------------------------------------
def _respellings(label: str) -> tp.Iterator[str]:
    """Enharmonic / quality-alias spellings of ``label``, the label itself first."""
    m = _LABEL.match(label)
    if m is None:
        return
    root, quality, bass = m.groups()
    qualities = [quality] + ([_QUALITY_ALIASES[quality]] if quality in _QUALITY_ALIASES else [])
    roots = _ENHARMONIC.get(root, (root,))
    basses = _ENHARMONIC.get(bass, (bass,)) if bass else (None,)
    for r, q, b in itertools.product(roots, qualities, basses):
        yield f"{r}{q}" + (f"/{b}" if b else "")


def vocabulary_label(label: str, mapping: tp.Mapping[str, int]) -> tp.Optional[str]:
    """The spelling of ``label`` that ``mapping`` holds (exact, else an enharmonic / alias respelling), or None."""
    label = NO_CHORD if label in (None, "") else label.strip()
    if label in mapping:
        return label
    return next((alt for alt in _respellings(label) if alt in mapping), None)


def chord_index(label: tp.Optional[str], mapping: tp.Mapping[str, int], warn: bool = True) -> int:
    """Index of one label: exact, else an enharmonic respelling, else 'UNK' (with a warning)."""
    label = NO_CHORD if label in (None, "") else label.strip()
    if label in mapping:
        return mapping[label]
    for alt in _respellings(label):
        if alt in mapping:
            return mapping[alt]
    if UNKNOWN not in mapping:
        raise InputError(f"unknown chord {label!r} and the mapping has no 'UNK' entry; use one of its labels")
    if warn:
        logger.warning("unknown chord %r mapped to 'UNK' (no enharmonic respelling is in the model's mapping)", label)
    return mapping[UNKNOWN]


def progression(items: tp.Any) -> Progression:
    """A progression given as data (a list of ``(label, start_seconds)`` pairs, e.g. from JSON) → checked list."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, tp.Sequence):
        raise InputError(f'chords must be a list of [label, start_seconds] pairs such as [["C", 0], ["F", 4]], '
                         f"got {type(items).__name__}")
    out: Progression = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError(f'chords entry {_short(item)} is not [label, start_seconds]; e.g. [["C", 0], ["F", 4]]')
        out.append((item[0], number(f"the start of chord {item[0][:40]!r}", item[1], unit="seconds")))
    return out


def _short(value: tp.Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def chord_changes(chords: tp.Sequence[tp.Tuple[str, float]]) -> tp.List[tp.Tuple[float, str]]:
    """``[(label, start_sec), ...]`` validated → ``[(start_sec, label), ...]`` in list order (audiocraft's
    ``chord_changes`` layout); one clear error for an entry that is not a pair or has a non-finite start."""
    changes = []
    for item in chords:
        try:
            label, start = item
            start = float(start)
        except (TypeError, ValueError) as exc:
            raise InputError(f"chord entry {item!r} is not (label, start_seconds); e.g. ('C', 0.0)") from exc
        if not math.isfinite(start):
            raise InputError(f"chord {label!r} has a non-finite start time {start}; give seconds, e.g. ('C', 0.0)")
        changes.append((start, label))
    return changes


def frame_chords(chords: tp.Sequence[tp.Tuple[str, float]], mapping: tp.Mapping[str, int], frame_rate: float,
                 duration: float, min_timestamp: int = 0) -> np.ndarray:
    """Progression [(label, start_sec), ...] → chord index per frame, int64 [int(duration·frame_rate)].

    audiocraft construct_frame_chords: the frame time is ``frame / frame_rate`` (float division, the
    edges matter: 0.14 s → frame 7); changes are consumed from the front in list order, so an unsorted
    list keeps list order; changes at or after the segment end are ignored.
    """
    changes = chord_changes(chords)
    indices: tp.Dict[str, int] = {}
    out = []
    current = ""
    pos = 0
    for frame in range(min_timestamp, int(min_timestamp + duration * frame_rate)):
        t = frame / frame_rate
        while pos < len(changes) and t >= changes[pos][0]:
            current = changes[pos][1]
            pos += 1
        current = NO_CHORD if current in (None, "") else current
        if current not in indices:
            indices[current] = chord_index(current, mapping)
        out.append(indices[current])
    return np.asarray(out, dtype=np.int64)


# -- progression formats -----------------------------------------------------------------------------
_PAIR = re.compile(r"\(\s*['\"]?([^,'\"()]+?)['\"]?\s*,\s*([-+0-9.eE]+)\s*\)")
_COLON = re.compile(r"^(.+):([-+0-9.eE]+)$")


def _parse_string(spec: str) -> Progression:
    text = spec.strip()
    if not text:
        raise InputError("empty chord progression; give e.g. \"C:0 F:4 G:6\"")
    if text.startswith("("):
        pairs = _PAIR.findall(text)
        leftover = _PAIR.sub("", text).replace(",", "").strip()
        if not pairs or leftover:
            raise InputError(f"cannot parse chords {spec!r}; expected \"(C, 0.0), (D, 2.0)\"")
        return [(label.strip(), _seconds(start, f"cannot parse chord ({label}, {start}) in {spec!r}; the start must be "
                                         "seconds, e.g. (F, 4.5)")) for label, start in pairs]
    out: Progression = []
    for token in text.replace(",", " ").split():
        m = _COLON.match(token)
        if m is None:
            raise InputError(f"cannot parse chord {token!r} in {spec!r}; expected LABEL:START_SECONDS as in \"C:0 F:4 G:6\"")
        out.append((m.group(1), _seconds(m.group(2), f"cannot parse chord {token!r} in {spec!r}; the start must be "
                                                     "seconds, e.g. F:4.5")))
    return out


def _seconds(value: tp.Any, message: str) -> float:
    """A chord start in seconds: a finite number (JSON true/false and strings like "x" or "nan" are refused)."""
    try:
        return parse_number("chord start", value)
    except InputError:
        raise InputError(message) from None


def _parse_lab(path: Path, text: str) -> Progression:
    out: Progression = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            start = float(parts[0])
            if len(parts) == 3:
                float(parts[1])
        except ValueError as exc:
            raise InputError(f"{path}:{n}: expected 'start end label' or 'start label', got {line.strip()!r}") from exc
        out.append((parts[-1], start))
    if not out:
        raise InputError(f"chord file {path} holds no chords; expected 'start end label' lines")
    return out


def _parse_json(path: Path, text: str) -> Progression:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"chord file {path} is not valid JSON ({exc})") from exc
    if isinstance(data, dict):
        data = data.get("chords")
    out: Progression = []
    for n, item in enumerate(data if isinstance(data, list) else [None]):
        if isinstance(item, dict) and {"chord", "start"} <= set(item):
            label, start = item["chord"], item["start"]
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, start = item
        else:
            raise InputError(f"chord file {path}: expected [[\"C\", 0.0], ...] or [{{\"chord\": \"C\", \"start\": 0.0}}, ...]")
        if label is not None and not isinstance(label, str):
            raise InputError(f"chord file {path}: entry {n} has label {label!r}; a chord label is a string such as \"C\"")
        out.append((label or "", _seconds(start, f"chord file {path}: entry {n} ({label!r}) has start {start!r}; the "
                                                 "start must be a number of seconds, e.g. 4.5")))
    return out


def parse_chords(spec: tp.Union[str, os.PathLike]) -> Progression:
    """A progression string or a ``.lab`` / ``.json`` / ``.txt`` file → [(label, start_sec), ...]."""
    path = Path(spec)
    try:
        exists = path.is_file()
    except OSError:  # e.g. a long progression string is no valid file name
        exists = False
    if isinstance(spec, os.PathLike) or path.suffix.lower() in (".lab", ".json", ".txt") or exists:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"chord file {path} is not UTF-8 text (a binary file?); give a .lab, .json or .txt "
                             "progression") from exc
        except OSError as exc:
            raise InputError(f"cannot read chord file {path} ({exc.strerror or exc})") from exc
        if path.suffix.lower() == ".json":
            return _parse_json(path, text)
        if path.suffix.lower() == ".lab":
            return _parse_lab(path, text)
        return _parse_string(text)
    return _parse_string(str(spec))


def parse_chords_text(spec: str) -> Progression:
    """A progression string only, never opened as a file: for untrusted input such as ``jasco-serve``'s
    HTTP requests (:func:`parse_chords` reads any existing path it is given)."""
    return _parse_string(spec)
