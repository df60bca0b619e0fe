"""Chords of a recording with Chordino, the extractor JASCO's training chords came from.

Chordino (M. Mauch & S. Dixon, "Approximate note transcription for the improved identification of difficult
chords", ISMIR 2010) is the NNLS-chroma Vamp plugin; JASCO's chord vocabulary (audiocraft
``assets/chord_to_index_mapping.pkl``) is its label set. The plugin runs through the ``vamp`` host on 44.1 kHz mono
(the rate its default block size is tuned for) with the parameters Chordino suggests for pop music (the defaults
of chord-extractor's ``Chordino`` class). Its output is the ``--chords`` progression: ``[(label, start_sec), ...]``.
"""
from __future__ import annotations

import logging
import typing as tp
from dataclasses import asdict, dataclass

import numpy as np

from .. import chords as chords_mod
from .audio import mono_at
from .deps import vamp_module

logger = logging.getLogger(__name__)
ANALYSIS_RATE = 44100
PLUGIN = "nnls-chroma:chordino"


@dataclass(frozen=True)
class ChordinoParams:
    """Chordino's parameters (its documentation, "Parameters"); the defaults are its pop-song suggestion."""

    useNNLS: int = 1  # approximate transcription (NNLS) on
    rollon: float = 1.0  # spectral roll-on, %
    tuningmode: int = 0  # 0 global, 1 local
    whitening: float = 1.0  # spectral whitening
    s: float = 0.7  # spectral shape
    boostn: float = 0.1  # boost of the 'N' (no chord) likelihood


def run_chordino(wav: np.ndarray, sample_rate: int, params: ChordinoParams = ChordinoParams()) -> chords_mod.Progression:
    """Audio [C, T] (any rate) → Chordino's chord changes ``[(label, start_sec), ...]`` (labels as Chordino spells
    them, 'N' for no chord), consecutive repeats merged."""
    vamp = vamp_module()
    mono = mono_at(wav, sample_rate, ANALYSIS_RATE)
    out = vamp.collect(mono, ANALYSIS_RATE, PLUGIN, parameters=asdict(params))
    progression: chords_mod.Progression = []
    for change in out.get("list", []):
        label = str(change.get("label", "")).strip() or chords_mod.NO_CHORD
        start = float(change["timestamp"])
        if progression and progression[-1][0] == label:
            continue
        progression.append((label, round(start, 4)))
    return progression


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
