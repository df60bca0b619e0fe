"""Synthesized test material with known truth for chord and melody extraction (numpy only).

Every generator is seeded and returns the audio with its truth at 50 frames/s (the model's frame rate):
- :func:`progression`: block chords (triads, sevenths, inversions) on a pad with a bass, optionally a drum loop;
  truth = (root pitch class, major/minor) per frame.
- :func:`melody`: a lead line (several timbres, optional vibrato) over a pad, optionally a bass and drums;
  truth = the lead's MIDI note per frame (0 = rest).
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

FRAME_RATE = 50
PITCH_CLASSES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
# chord quality → (intervals above the root, is_minor)
QUALITIES = {"": ((0, 4, 7), False), "m": ((0, 3, 7), True), "7": ((0, 4, 7, 10), False),
             "maj7": ((0, 4, 7, 11), False), "m7": ((0, 3, 7, 10), True), "6": ((0, 4, 7, 9), False)}
TIMBRES = ("sine", "flute", "saw", "square", "pluck", "organ")


def midi_hz(m: tp.Union[float, np.ndarray]) -> tp.Union[float, np.ndarray]:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _harmonics(timbre: str) -> tp.List[float]:
    return {"sine": [1.0], "saw": [1.0 / k for k in range(1, 13)],
            "square": [1.0 / k if k % 2 else 0.0 for k in range(1, 13)],
            "flute": [1.0, 0.35, 0.15, 0.06], "pluck": [1.0 / k ** 1.5 for k in range(1, 10)],
            "organ": [1.0, 0.8, 0.6, 0.35, 0.25, 0.15, 0.1],
            "pad": [1.0 / k ** 1.2 for k in range(1, 9)]}[timbre]


def tone(midi: float, seconds: float, sr: int, timbre: str = "saw", vibrato: float = 0.0, vibrato_hz: float = 5.5,
         attack: float = 0.01, release: float = 0.05, phase: float = 0.0) -> np.ndarray:
    """One note: additive harmonics below Nyquist, ``vibrato`` semitones of sinusoidal FM, an AR envelope
    (``pluck``: exponential decay)."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    inst = midi + vibrato * np.sin(2 * np.pi * vibrato_hz * t + phase)
    phase_acc = 2 * np.pi * np.cumsum(midi_hz(inst)) / sr
    f0 = float(midi_hz(midi))
    x = np.zeros(n)
    for k, a in enumerate(_harmonics(timbre), 1):
        if a and k * f0 * 2 ** (abs(vibrato) / 12) < 0.45 * sr:
            x += a * np.sin(k * phase_acc)
    env = np.minimum(1.0, t / max(attack, 1e-4)) * np.minimum(1.0, (seconds - t) / max(release, 1e-4))
    if timbre == "pluck":
        env *= np.exp(-t * 2.5)
    return (x * np.clip(env, 0, 1)).astype(np.float32)


def drum_loop(seconds: float, sr: int, bpm: float = 110.0, seed: int = 0) -> np.ndarray:
    """Kick on 1 and 3, snare on 2 and 4, eighth-note hats."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    beat = 60.0 / bpm
    t_k = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t_k + 60 * (1 - np.exp(-t_k * 30)) / 30)) * np.exp(-t_k * 18)
    snare = rng.standard_normal(int(0.18 * sr)) * np.exp(-np.arange(int(0.18 * sr)) / sr * 25)
    hat_noise = rng.standard_normal(int(0.05 * sr))
    hat = np.diff(hat_noise, prepend=0) * np.exp(-np.arange(hat_noise.size) / sr * 80) * 0.5
    for i in range(int(seconds / (beat / 2)) + 1):
        pos = int(i * beat / 2 * sr)
        for hit, on in ((kick, i % 4 == 0), (snare, i % 4 == 2), (hat, True)):
            if on and pos < n:
                m = min(hit.size, n - pos)
                out[pos:pos + m] += hit[:m]
    return out.astype(np.float32)


def _mix(parts: tp.Sequence[tp.Tuple[np.ndarray, float]], n: int) -> np.ndarray:
    out = np.zeros(n, np.float64)
    for x, gain in parts:
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
        out[:x.size] += gain * x[:n] / rms
    return (0.5 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


@dataclass
class ChordCase:
    name: str
    audio: np.ndarray  # [1, samples]
    sample_rate: int
    chords: tp.List[tp.Tuple[str, float]]  # the played progression (label, start)
    truth: tp.List[tp.Optional[tp.Tuple[int, bool]]]  # per 50-fps frame: (root pc, is_minor), None past the end


def progression(name: str, chords: tp.Sequence[tp.Tuple[int, str, int]], sr: int, seconds_each: float = 2.5,
                drums: bool = False, seed: int = 0) -> ChordCase:
    """``chords``: (root pitch class, quality, inversion) per chord; voiced around C4 on a pad with the bass on the
    inversion's lowest note."""
    n_each = int(round(seconds_each * sr))
    n = n_each * len(chords)
    pad, bass = np.zeros(n, np.float32), np.zeros(n, np.float32)
    labels, truth = [], []
    for i, (root, quality, inversion) in enumerate(chords):
        intervals, minor = QUALITIES[quality]
        notes = [48 + root + iv for iv in intervals]  # root position from C3
        for _ in range(inversion):
            notes = notes[1:] + [notes[0] + 12]
        notes = [m + 12 if m < 52 else m for m in notes]
        for m in notes:
            pad[i * n_each:(i + 1) * n_each] += tone(m, seconds_each, sr, "pad", attack=0.03, release=0.08)
        bass_note = 36 + (root + intervals[inversion]) % 12
        bass[i * n_each:(i + 1) * n_each] += tone(bass_note, seconds_each, sr, "saw", attack=0.01, release=0.08)
        label = PITCH_CLASSES[root] + quality
        if inversion:
            label += "/" + PITCH_CLASSES[(root + intervals[inversion]) % 12]
        labels.append((label, i * seconds_each))
        truth += [(root, minor)] * int(round(seconds_each * FRAME_RATE))
    parts = [(pad, 1.0), (bass, 0.6)]
    if drums:
        parts.append((drum_loop(n / sr, sr, seed=seed), 0.9))
    return ChordCase(name, _mix(parts, n)[None], sr, labels, truth)


@dataclass
class MelodyCase:
    name: str
    audio: np.ndarray  # [1, samples]
    sample_rate: int
    truth: np.ndarray  # int [frames] MIDI of the lead at 50 frames/s, 0 = rest


def random_line(rng: np.random.Generator, seconds: float, low: int = 67, high: int = 84,
                rest_prob: float = 0.15) -> tp.List[tp.Tuple[float, float, int]]:
    """(start, duration, midi or 0) notes of a stepwise line in C major between ``low`` and ``high``."""
    scale = [m for m in range(low, high + 1) if m % 12 in (0, 2, 4, 5, 7, 9, 11)]
    idx, t, notes = len(scale) // 2, 0.0, []
    while t < seconds - 0.2:
        dur = float(rng.choice([0.25, 0.375, 0.5, 0.75, 1.0]))
        dur = min(dur, seconds - t)
        if rng.random() < rest_prob:
            notes.append((t, dur, 0))
        else:
            idx += int(rng.choice([-3, -2, -1, -1, 1, 1, 2, 3]))
            idx = -idx if idx < 0 else (2 * (len(scale) - 1) - idx if idx >= len(scale) else idx)  # reflect
            notes.append((t, dur, scale[idx]))
        t += dur
    return notes


def melody(name: str, sr: int, timbre: str = "saw", vibrato: float = 0.0, seconds: float = 12.0, bass: bool = True,
           drums: bool = False, pad_gain: float = 0.7, seed: int = 0) -> MelodyCase:
    """A lead over a pad (C–Am–F–G, 2 s each, voiced C3–G4 below the lead), optionally a bass and a drum loop."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    lead = np.zeros(n, np.float32)
    truth = np.zeros(int(round(seconds * FRAME_RATE)), np.int64)
    for start, dur, m in random_line(rng, seconds):
        a = int(round(start * sr))
        if m:
            x = tone(m, dur, sr, timbre, vibrato=vibrato, attack=0.015, release=0.03, phase=float(rng.random() * 6))
            lead[a:a + x.size] += x[:n - a]
            truth[int(round(start * FRAME_RATE)):int(round((start + dur) * FRAME_RATE))] = m
    pad = np.zeros(n, np.float32)
    bass_line = np.zeros(n, np.float32)
    progression_pcs = [(0, False), (9, True), (5, False), (7, False)]
    each = 2.0
    for i in range(int(np.ceil(seconds / each))):
        root, minor = progression_pcs[i % 4]
        a = int(round(i * each * sr))
        dur = min(each, seconds - i * each)
        for iv in ((0, 3, 7) if minor else (0, 4, 7)):
            m = 48 + (root + iv) % 12 + (12 if (root + iv) % 12 < 7 else 0)  # G3..F#4
            x = tone(m, dur, sr, "pad", attack=0.05, release=0.1)
            pad[a:a + x.size] += x
        x = tone(36 + root, dur, sr, "saw", attack=0.01, release=0.1)
        bass_line[a:a + x.size] += x
    parts = [(lead, 1.0), (pad, pad_gain)]
    if bass:
        parts.append((bass_line, 0.5))
    if drums:
        parts.append((drum_loop(seconds, sr, seed=seed), 0.8))
    return MelodyCase(name, _mix(parts, n)[None], sr, truth)


# -- the standard cases ------------------------------------------------------------------------------------------
TRIADS = [(0, "", 0), (9, "m", 0), (5, "", 0), (7, "", 0), (2, "m", 0), (4, "m", 0), (10, "", 0), (3, "", 0)]
SEVENTHS = [(0, "maj7", 0), (9, "m7", 0), (2, "m7", 0), (7, "7", 0), (4, "m7", 0), (5, "maj7", 0), (11, "m7", 0),
            (6, "m", 0)]
INVERSIONS = [(0, "", 1), (7, "", 2), (9, "m", 1), (5, "", 2), (2, "m", 1), (7, "", 1), (4, "m", 2), (0, "", 0)]


def chord_cases(rates: tp.Sequence[int] = (32000, 44100, 48000), drums: tp.Sequence[bool] = (False, True)
                ) -> tp.Iterator[ChordCase]:
    for kind, chords in (("triads", TRIADS), ("sevenths", SEVENTHS), ("inversions", INVERSIONS)):
        for sr in rates:
            for d in drums:
                yield progression(f"{kind}-{sr // 1000 if sr % 1000 == 0 else sr / 1000:g}k{'-drums' if d else ''}",
                                  chords, sr, drums=d, seed=sr)


def melody_cases(rates: tp.Sequence[int] = (32000, 44100, 48000), seed_base: int = 2100) -> tp.Iterator[MelodyCase]:
    """Eight leads; ``seed_base`` 2100: lines the lead tracker was NOT tuned on (it was tuned on 100 and 1100)."""
    variants = [("saw", 0.0, False), ("square", 0.0, True), ("flute", 0.3, False), ("pluck", 0.0, True),
                ("organ", 0.5, True), ("saw", 0.4, True), ("sine", 0.0, False), ("sine", 0.3, True)]
    for i, (timbre, vib, drums) in enumerate(variants):
        sr = rates[i % len(rates)]
        name = f"{timbre}{'-vibrato' if vib else ''}{'-drums' if drums else ''}-{sr // 1000 if sr % 1000 == 0 else sr / 1000:g}k"
        yield melody(name, sr, timbre, vibrato=vib, drums=drums, seed=seed_base + i)


# -- scores ------------------------------------------------------------------------------------------------------
def label_root_minor(label: str) -> tp.Optional[tp.Tuple[int, bool]]:
    """A Chordino / JASCO label → (root pitch class, is_minor); None for 'N', 'UNK' and sus chords."""
    import re

    m = re.match(r"^([A-G])([#b]?)([^/]*)", label or "")
    if m is None:
        return None
    pc = (PITCH_CLASSES.index(m.group(1)) + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    quality = m.group(3)
    if quality.startswith("sus"):
        return None
    minor = quality.startswith("m") and not quality.startswith("maj") or quality.startswith("dim")
    return pc, minor


def chord_accuracy(frame_labels: tp.Sequence[str], truth: tp.Sequence[tp.Optional[tp.Tuple[int, bool]]]) -> float:
    """Fraction of truth frames whose label has the right root and major/minor."""
    pairs = [(label_root_minor(p), t) for p, t in zip(frame_labels, truth) if t is not None]
    return sum(p == t for p, t in pairs) / max(len(pairs), 1)


def melody_scores(salience: np.ndarray, truth: np.ndarray, first_midi: int = 43) -> tp.Dict[str, float]:
    """``salience`` [53, T] one-hot → within-a-semitone accuracy on voiced truth frames (raw pitch accuracy),
    recall of voicing, and false-alarm rate on the rests."""
    n = min(salience.shape[1], truth.shape[0])
    voiced = salience[:, :n].max(axis=0) > 0
    pred = np.where(voiced, first_midi + salience[:, :n].argmax(axis=0), 0)
    t = truth[:n]
    on = t > 0
    right = on & voiced & (np.abs(pred - t) <= 1)
    return {"pitch_within_semitone": float(right.sum() / max(on.sum(), 1)),
            "voicing_recall": float((on & voiced).sum() / max(on.sum(), 1)),
            "voicing_false_alarm": float((~on & voiced).sum() / max((~on).sum(), 1)),
            "voiced_frames": int(on.sum())}
