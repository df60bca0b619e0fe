"""The lead line of a recording from multipitch salience: a Viterbi path over the frame's salient pitches that
prefers the loud and the high ones and keeps continuity.

With an accompaniment (a pad, a bass) the strongest salience of a frame is often the accompaniment, so its argmax
is not the melody. Following predominant-melody tracking (J. Salamon & E. Gómez, "Melody extraction from
polyphonic music signals using pitch contour characteristics", IEEE TASLP 2012: melody contours are the louder,
higher and more continuous ones), each frame's candidates are the salience peaks above a threshold, plus the
spectral peaks among the loudest fundamentals in frames that have a salience peak (a pure tone the salience model
misses, :func:`spectral_candidates`); a candidate scores its salience, the level of its fundamental in the spectrum
relative to the frame's loudest pitch, and its height; the path pays for pitch jumps and voicing changes.

Two note-level rules after the same paper: a contour (a run of frames with a candidate on one row) that the path
follows keeps part of the level it had since its onset (``hold_weight``: their melody contours are chosen as
wholes, so a plucked note that decays below a sustained pad stays the lead while it sounds), and a candidate an
octave above a clearly louder one is taken for its second harmonic (``octave_margin_db``). Frames with (near) no
signal are unvoiced (:func:`active_frames`): the salience model has a background (≈ 0.1) above the candidate
threshold even on digital silence.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LeadParams:
    """Tuned on synthesized leads over pads, bass and drums (benchmarks/extract_synth.py, seeds 100–107 and
    1100–1107; checked on 2100–2107). ``spectral_db`` was chosen on the same tuning seeds (0, 1, 2, 3, 4.5, 6, 9,
    12 dB tried; 6 had the best mean). ``octave_margin_db`` and ``hold_weight`` were chosen together on the same
    tuning seeds (benchmarks/extract_tune.py: margin −3/−4/−5 dB × weight 0/0.25/0.5/0.75 × a hold decaying at
    0/5/10 dB/s; rule: the best mean of the settings whose worst case is within 0.5 points of the best worst case).
    ``silence_db`` is not tuned (the material has no silence): a conservative gate, see :func:`active_frames`."""

    threshold: float = 0.03  # salience a candidate needs (a quiet pure tone scores ~0.1)
    salience_weight: float = 0.25
    level_weight: float = 2.0  # weight of the fundamental's level, 0 (≤ −level_range dB) … 1 (the loudest pitch)
    level_range_db: float = 45.0
    height_weight: float = 1.0  # weight of the pitch height, 0 (lowest row) … 1 (highest)
    jump_cost: float = 0.02  # per semitone of a pitch change (capped at an octave)
    change_cost: float = 0.1  # any pitch change
    voicing_cost: float = 0.8  # voiced ↔ unvoiced
    unvoiced_score: float = 0.9  # score of the unvoiced state per frame
    octave_penalty: float = 1.0  # score taken from a likely second harmonic (:func:`octave_partials`)
    octave_margin_db: float = -5.0  # the note an octave below must be ≥ 5 dB louder (see :func:`octave_partials`)
    spectral_db: float = 6.0  # a fundamental this close to the frame's loudest is a candidate (0: salience peaks only)
    hold_weight: float = 0.25  # staying on a contour: level = (1 − w)·frame level + w·its peak since onset (0: off)
    silence_db: float = 60.0  # frames this far below the recording's level are unvoiced (0: no gate), :func:`active_frames`


def fundamental_levels(audio: np.ndarray, sample_rate: int, hop: int, n_frames: int, first_midi: int, n_pitches: int,
                       n_fft: int = 4096) -> np.ndarray:
    """[n_frames, n_pitches] level (dB relative to the frame's loudest pitch, ≤ 0) of each pitch's fundamental:
    the peak STFT magnitude within ± half a semitone of it (Hann window, frames centred on ``i · hop``)."""
    x = np.pad(np.asarray(audio, np.float32), (n_fft // 2, n_fft // 2 + hop * n_frames))
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = np.hanning(n_fft).astype(np.float32)
    mag = np.empty((n_frames, n_pitches), np.float32)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    midi = first_midi + np.arange(n_pitches)
    lo = np.searchsorted(freqs, 440.0 * 2 ** ((midi - 0.5 - 69) / 12))
    hi = np.maximum(np.searchsorted(freqs, 440.0 * 2 ** ((midi + 0.5 - 69) / 12)), lo + 1)
    for a in range(0, n_frames, 1024):  # bounded memory on long songs
        spec = np.abs(np.fft.rfft(x[idx[a:a + 1024]] * window, axis=1))
        mag[a:a + 1024] = np.stack([spec[:, l:h].max(axis=1) for l, h in zip(lo, hi)], axis=1)
    db = 20 * np.log10(np.maximum(mag, 1e-9))
    return db - db.max(axis=1, keepdims=True)


def candidates(salience: np.ndarray, params: LeadParams) -> np.ndarray:
    """[T, P] bool: local salience maxima (over pitch) above the threshold."""
    s = salience
    left = np.pad(s, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
    right = np.pad(s, ((0, 0), (0, 1)), constant_values=-1)[:, 1:]
    return (s >= left) & (s >= right) & (s >= params.threshold)


def spectral_candidates(levels: np.ndarray, within_db: float) -> np.ndarray:
    """[T, P] bool: pitches whose fundamental is a local maximum of ``levels`` (over pitch) within ``within_db`` of
    the frame's loudest pitch.

    basic-pitch's salience is learnt from instruments with a harmonic series; a pure tone (sine, soft flute) whose
    frequency coincides with an overtone of a louder-looking accompaniment note (E5 = the 3rd harmonic of A3) gets
    salience below the background there, although its fundamental is the loudest in the spectrum."""
    if within_db <= 0:
        return np.zeros(levels.shape, bool)
    left = np.pad(levels, ((0, 0), (1, 0)), constant_values=-np.inf)[:, :-1]
    right = np.pad(levels, ((0, 0), (0, 1)), constant_values=-np.inf)[:, 1:]
    return (levels >= left) & (levels >= right) & (levels >= -within_db)


def octave_partials(cand: np.ndarray, levels: np.ndarray, margin_db: float) -> np.ndarray:
    """[T, P] bool: candidates with a candidate an octave below whose fundamental is at least ``−margin_db`` dB
    louder (``margin_db`` ≤ 0) — likely that note's second harmonic rather than a note of their own.

    A harmonic instrument's second partial is weaker than its fundamental (−6 dB for a sawtooth, −7 to −9 dB for
    the pads and plucks here), whereas a lead doubling a chord note an octave up is about as loud as that note; with
    the old margin of 0 dB such a lead (C5 over the pad's C4) lost its whole note to the pad."""
    out = np.zeros_like(cand)
    for k in (11, 12, 13):  # the lower note may peak a semitone off (vibrato, bends)
        out[:, k:] |= cand[:, k:] & cand[:, :-k] & (levels[:, :-k] >= levels[:, k:] - margin_db)
    return out


def active_frames(audio: np.ndarray, hop: int, n_frames: int, below_db: float, window: int = 2048) -> np.ndarray:
    """[n_frames] bool: frames (centred on ``i · hop``, ``window`` samples) whose RMS is within ``below_db`` dB of
    the recording's level (the 95th percentile of the frame RMS, i.e. its loud passages); digital silence is never
    active. A silence gate, not a voicing detector: 60 dB below the loud passages is near the noise floor of 16-bit
    audio mastered loud (−96 dBFS), so a quiet intro or fade-out (typically within 30–40 dB) keeps its melody."""
    if below_db <= 0:
        return np.ones(n_frames, bool)
    x = np.asarray(audio, np.float64)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    centre = hop * np.arange(n_frames)
    lo, hi = np.clip(centre - window // 2, 0, x.size), np.clip(centre + window // 2, 0, x.size)
    rms = np.sqrt((energy[hi] - energy[lo]) / window)
    on = rms > 1e-7  # −140 dBFS: digital silence, and a recording that is silent throughout
    if not on.any():
        return on
    reference = np.percentile(rms[on], 95)
    return on & (20 * np.log10(np.maximum(rms, 1e-12) / reference) >= -below_db)


def contour_peaks(cand: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """[T, P] the peak level of each candidate's contour from its onset up to the frame (a contour: consecutive
    frames with a candidate on the same row; Salamon & Gómez 2012 track pitch contours this way before choosing
    the melody among them); −inf off the candidates."""
    out = np.full(cand.shape, -np.inf)
    peak = np.full(cand.shape[1], -np.inf)
    for t in range(cand.shape[0]):
        peak = np.where(cand[t], np.maximum(peak, levels[t]), -np.inf)
        out[t] = peak
    return out


def _emissions(salience: np.ndarray, level_term: tp.Optional[np.ndarray], cand: np.ndarray,
               penalty: np.ndarray, params: LeadParams) -> np.ndarray:
    """[T, P + 1] score of each state per frame: unvoiced, then each pitch (−inf off the candidates)."""
    T, P = salience.shape
    score = params.salience_weight * salience + params.height_weight * (np.arange(P) / max(P - 1, 1))[None] - penalty
    if level_term is not None:
        score = score + params.level_weight * np.clip(1 + level_term / params.level_range_db, 0, 1)
    emit = np.empty((T, P + 1))
    emit[:, 0] = params.unvoiced_score
    emit[:, 1:] = np.where(cand, score, -np.inf)
    return emit


def _transitions(P: int, params: LeadParams) -> np.ndarray:
    """[P + 1, P + 1] score of moving from state i to state j (0 = unvoiced)."""
    pitch = np.arange(P)
    jump = np.abs(pitch[:, None] - pitch[None, :])
    trans = np.zeros((P + 1, P + 1))
    trans[1:, 1:] = -(params.jump_cost * np.minimum(jump, 12) + params.change_cost * (jump > 0))
    trans[0, 1:] = trans[1:, 0] = -params.voicing_cost
    return trans


def viterbi(enter: np.ndarray, stay: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """The best state path: ``enter[t, j]`` scores arriving in state j from another state, ``stay[t, j]`` staying
    in it (both [T, S]), ``trans`` [S, S] the moves; returns [T] state indices."""
    T, S = enter.shape
    cols = np.arange(S)
    total_score = enter[0].copy()
    back = np.zeros((T, S), np.int32)
    for t in range(1, T):
        total = total_score[:, None] + trans + enter[t][None]
        total[cols, cols] = total_score + stay[t]
        back[t] = np.argmax(total, axis=0)
        total_score = total[back[t], cols]
    path = np.empty(T, np.int64)
    path[-1] = int(np.argmax(total_score))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def track(salience: np.ndarray, levels: tp.Optional[np.ndarray] = None, params: LeadParams = LeadParams(),
          active: tp.Optional[np.ndarray] = None) -> np.ndarray:
    """Salience [T, P] (P pitches, low to high; ``levels`` [T, P] dB from :func:`fundamental_levels`; ``active``
    [T] bool from :func:`active_frames`, False = no signal) → the lead's pitch index per frame, −1 where unvoiced."""
    T, P = salience.shape
    if T == 0:
        return np.zeros(0, np.int64)
    cand = candidates(salience, params)
    if active is not None:
        cand &= np.asarray(active, bool)[:, None]
    if levels is None:
        emit = _emissions(salience, None, cand, np.zeros((T, P)), params)
        return viterbi(emit, emit, _transitions(P, params)) - 1
    # spectral peaks add pitches to frames with notes; they voice no frame on their own
    cand = cand | (spectral_candidates(levels, params.spectral_db) & cand.any(axis=1, keepdims=True))
    penalty = params.octave_penalty * octave_partials(cand, levels, params.octave_margin_db)
    enter = _emissions(salience, levels, cand, penalty, params)
    if params.hold_weight:
        held = np.where(cand, levels + params.hold_weight * (contour_peaks(cand, levels) - levels), levels)
        stay = _emissions(salience, held, cand, penalty, params)
    else:
        stay = enter
    return viterbi(enter, stay, _transitions(P, params)) - 1
