"""Chords of a recording with Chordino, the extractor JASCO's training chords came from.

Chordino (M. Mauch & S. Dixon, "Approximate note transcription for the improved identification of difficult
chords", ISMIR 2010) is the NNLS-chroma Vamp plugin; JASCO's chord vocabulary (audiocraft
``assets/chord_to_index_mapping.pkl``) is its label set. The plugin runs through the ``vamp`` host on 44.1 kHz mono
(the rate its default block size is tuned for) with the parameters Chordino suggests for pop music (the defaults
of chord-extractor's ``Chordino`` class). Its output is the ``--chords`` progression: ``[(label, start_sec), ...]``.

One documented re-reading (:class:`SixthCheck`, on by default, docs/extract.md): Chordino's dictionary has no minor
slash chords, so a minor first inversion such as Am/C (C–E–A over a C bass) is read as ``C6`` (C–E–G–A, the
nearest profile with a C bass). Where the segment's NNLS chroma shows no fifth, the ``X6`` is re-read as its
relative minor ``(X-3)m`` — the label Chordino itself gives the other minor inversions (Dm/F → ``Dm``).
"""
from __future__ import annotations

import logging
import re
import typing as tp
from dataclasses import asdict, dataclass

import numpy as np

from .. import chords as chords_mod
from .audio import mono_at
from .deps import vamp_module

logger = logging.getLogger(__name__)
ANALYSIS_RATE = 44100
PLUGIN = "nnls-chroma:chordino"
CHROMA_PLUGIN = "nnls-chroma:nnls-chroma"  # the same NNLS front end; its 'chroma' output starts at A
ROOT_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # Chordino's spelling of roots
_SIXTH = re.compile(r"^([A-G])([#b]?)6$")


@dataclass(frozen=True)
class ChordinoParams:
    """Chordino's parameters (its documentation, "Parameters"); the defaults are its pop-song suggestion."""

    useNNLS: int = 1  # approximate transcription (NNLS) on
    rollon: float = 1.0  # spectral roll-on, %
    tuningmode: int = 0  # 0 global, 1 local
    whitening: float = 1.0  # spectral whitening
    s: float = 0.7  # spectral shape
    boostn: float = 0.1  # boost of the 'N' (no chord) likelihood


@dataclass(frozen=True)
class SixthCheck:
    """Re-read Chordino's ``X6`` as ``(X-3)m`` where the fifth of X is absent from the segment's treble chroma:
    chroma[fifth] < ``fifth_ratio`` · mean(chroma[root, third, sixth]). ``enabled=False``: Chordino's labels as
    they are (what JASCO's training chords were). ``fifth_ratio`` is the midpoint between the fifths measured on
    tuning material that is not the benchmark's (docs/extract.md): minor first inversions read as X6 (Bm/D,
    Bbm/C#: 0.37–0.39) and played 6 chords (C6 … Eb6, root position and inverted: 0.56–0.86)."""

    enabled: bool = True
    fifth_ratio: float = 0.47


def run_chordino(wav: np.ndarray, sample_rate: int, params: ChordinoParams = ChordinoParams(),
                 sixths: SixthCheck = SixthCheck()) -> chords_mod.Progression:
    """Audio [C, T] (any rate) → Chordino's chord changes ``[(label, start_sec), ...]`` (labels as Chordino spells
    them, 'N' for no chord), consecutive repeats merged; fifthless ``X6`` re-read per ``sixths``."""
    vamp = vamp_module()
    mono = mono_at(wav, sample_rate, ANALYSIS_RATE)
    out = vamp.collect(mono, ANALYSIS_RATE, PLUGIN, parameters=asdict(params))
    progression = _merged((str(c.get("label", "")).strip() or chords_mod.NO_CHORD, round(float(c["timestamp"]), 4))
                          for c in out.get("list", []))
    if sixths.enabled:
        progression = reread_sixths(progression, mono, params, sixths)
    return progression


def _merged(changes: tp.Iterable[tp.Tuple[str, float]]) -> chords_mod.Progression:
    """Changes with consecutive repeats of a label dropped."""
    progression: chords_mod.Progression = []
    for label, start in changes:
        if not (progression and progression[-1][0] == label):
            progression.append((label, start))
    return progression


def segment_chroma(mono: np.ndarray, start: float, end: float, params: ChordinoParams = ChordinoParams()
                   ) -> tp.Optional[np.ndarray]:
    """Mean NNLS treble chroma (12, index 0 = C) of ``mono`` (44.1 kHz) between ``start`` and ``end`` seconds, from
    the NNLS-chroma plugin Chordino is built on (same parameters); None for a segment too short to give a frame."""
    vamp = vamp_module()
    seg = mono[int(start * ANALYSIS_RATE):int(end * ANALYSIS_RATE)]
    shared = {k: v for k, v in asdict(params).items() if k != "boostn"}
    if seg.size < ANALYSIS_RATE // 10:
        return None
    _, matrix = vamp.collect(seg, ANALYSIS_RATE, CHROMA_PLUGIN, output="chroma", parameters=shared)["matrix"]
    matrix = np.asarray(matrix, np.float64)
    if matrix.size == 0:
        return None
    return np.roll(matrix.mean(axis=0), -3)  # A-based → C-based


def fifthless_sixth(label: str, chroma: np.ndarray, fifth_ratio: float) -> tp.Optional[str]:
    """``(X-3)m`` for a label ``X6`` whose fifth is weaker than ``fifth_ratio`` × its other tones' mean, else None."""
    m = _SIXTH.match(label)
    if m is None:
        return None
    root = (ROOT_NAMES.index(m.group(1)) + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    others = float(np.mean([chroma[(root + iv) % 12] for iv in (0, 4, 9)]))
    if others <= 0 or chroma[(root + 7) % 12] >= fifth_ratio * others:
        return None
    return ROOT_NAMES[(root + 9) % 12] + "m"


def reread_sixths(progression: chords_mod.Progression, mono: np.ndarray, params: ChordinoParams = ChordinoParams(),
                  check: SixthCheck = SixthCheck()) -> chords_mod.Progression:
    """``progression`` with each fifthless ``X6`` segment re-read as ``(X-3)m`` (:class:`SixthCheck`); the chroma
    is computed on those segments only."""
    end = mono.shape[0] / ANALYSIS_RATE
    out = []
    for i, (label, start) in enumerate(progression):
        if _SIXTH.match(label):
            stop = progression[i + 1][1] if i + 1 < len(progression) else end
            chroma = segment_chroma(mono, start, stop, params)
            minor = None if chroma is None else fifthless_sixth(label, chroma, check.fifth_ratio)
            if minor is not None:
                logger.debug("%s at %.2f s has no fifth in the chroma: read as %s", label, start, minor)
                label = minor
        out.append((label, start))
    return _merged(out)


def to_vocabulary(progression: chords_mod.Progression, mapping: tp.Optional[tp.Mapping[str, int]]
                  ) -> chords_mod.Progression:
    """Labels spelled as the model's mapping spells them (enharmonics, quality aliases, slash chords), as typed chords
    are (:func:`jasco_runtime.chords.chord_index`); a label with no spelling in the mapping is kept and warned about
    (it frames as 'UNK'). ``mapping=None``: Chordino's own spelling, JASCO's training vocabulary."""
    if mapping is None:
        return list(progression)
    out: chords_mod.Progression = []
    for label, start in progression:
        spelled = chords_mod.vocabulary_label(label, mapping)
        if spelled is None:
            logger.warning("extracted chord %r is not in the model's chord vocabulary; it frames as 'UNK'", label)
        out.append((spelled or label, start))
    return out


def chord_frames(progression: chords_mod.Progression, frame_rate: float, n_frames: int) -> tp.List[str]:
    """The label in force at each frame ``f / frame_rate`` (audiocraft's framing, BEHAVIOUR.md §13)."""
    changes = chords_mod.chord_changes(progression)
    out, current, pos = [], chords_mod.NO_CHORD, 0
    for f in range(n_frames):
        t = f / frame_rate
        while pos < len(changes) and t >= changes[pos][0]:
            current = changes[pos][1] or chords_mod.NO_CHORD
            pos += 1
        out.append(current)
    return out


def write_lab(progression: chords_mod.Progression, end: float) -> str:
    """``start end label`` lines (the ``.lab`` format ``--chords`` reads); the last chord lasts until ``end``."""
    lines = []
    for i, (label, start) in enumerate(progression):
        stop = progression[i + 1][1] if i + 1 < len(progression) else max(end, start)
        lines.append(f"{start:.3f} {stop:.3f} {label}")
    return "\n".join(lines) + "\n"
