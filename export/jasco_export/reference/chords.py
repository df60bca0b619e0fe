"""Chord progression → frame chords for the reference (BEHAVIOUR.md §13).

Ported from audiocraft/models/jasco.py ``JASCO._prepare_chord_conditions`` (flip to
``(start, label)``) and audiocraft/utils/utils.py ``construct_frame_chords`` (pop changes from the
front while ``frame / frame_rate >= start``), kept apart from ``jasco_runtime.chords`` so that
runtime-vs-reference parity also checks the framing. Absent chords are not framed here: the reference's
``JASCO.condition_inputs`` fills the null chord (card) on every frame, as audiocraft's
``JascoConditioningProvider`` does.

Only labels missing from the mapping go to the runtime: audiocraft raises ``KeyError`` for them, and
the respelling / 'UNK' policy that replaces it (BEHAVIOUR.md §14) is input handling, not framing.
"""
from __future__ import annotations

import typing as tp

import torch

from jasco_runtime.chords import chord_changes, chord_index


NO_CHORD = "N"


def construct_frame_chords(min_timestamp: int, chord_changes: tp.List[tp.Tuple[float, str]],
                           mapping_dict: tp.Mapping[str, int], prev_chord: str, frame_rate: float,
                           segment_duration: float) -> tp.List[int]:
    """``[(start_sec, label), ...]`` → one chord index per frame (audiocraft ``construct_frame_chords``).

    ``chord_changes`` is consumed (popped from the front, in list order: an unsorted list is not
    sorted); frame ``f`` is at ``f / frame_rate`` seconds, a float division whose edges matter.
    """
    resolved: tp.Dict[str, int] = {}  # look each label up once (one 'UNK' warning per label)
    frame_chords: tp.List[int] = []
    current_chord = prev_chord
    n_frames = int(min_timestamp + segment_duration * frame_rate)
    for frame_time in (frame / frame_rate for frame in range(min_timestamp, n_frames)):
        while chord_changes and frame_time >= chord_changes[0][0]:
            current_chord = chord_changes.pop(0)[1]
        if current_chord is None or current_chord == "":
            current_chord = NO_CHORD
        if current_chord not in resolved:
            resolved[current_chord] = (mapping_dict[current_chord] if current_chord in mapping_dict
                                       else chord_index(current_chord, mapping_dict))
        frame_chords.append(resolved[current_chord])
    return frame_chords


def frame_chords(chords: tp.Sequence[tp.Tuple[str, float]], mapping: tp.Mapping[str, int], frame_rate: float,
                 duration: float) -> torch.Tensor:
    """``[(label, start_sec), ...]`` → frame chords, int64 [int(duration · frame_rate)]."""
    indices = construct_frame_chords(min_timestamp=0, chord_changes=chord_changes(chords), mapping_dict=mapping,
                                     prev_chord="", frame_rate=frame_rate, segment_duration=duration)
    return torch.tensor(indices, dtype=torch.int64)
