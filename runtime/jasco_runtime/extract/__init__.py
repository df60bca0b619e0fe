"""Conditions from a reference recording: chords (Chordino), the lead melody (basic-pitch's ONNX pitch model) and
the drum stem, in the formats ``--chords`` / ``--melody`` / ``--drums`` take.

    from jasco_runtime import extract
    progression = extract.chords(wav, sample_rate)          # [(label, start_sec), ...]
    salience = extract.melody(wav, sample_rate)             # float32 [53, T] one-hot at 50 frames/s
    conds = extract.reference_conditions("song.wav")        # all three at once

Needs the ``extract`` extra (docs/extract.md); without it each call raises :class:`MissingExtra` naming it.
"""
from __future__ import annotations

from .deps import MissingExtra
from .reference import ReferenceConditions, chords, melody, reference_conditions

__all__ = ["MissingExtra", "ReferenceConditions", "chords", "melody", "reference_conditions"]
