"""The lead tracker's tuning grid, on the tuning seeds only (100–107 and 1100–1107; the benchmark's 2100–2107 are
held out). Reproduces the choice of ``LeadParams.octave_margin_db`` and ``hold_weight``:

    python -m benchmarks.extract_tune

Each setting is scored on the 16 tuning cases (voiced frames within a semitone); the rule: among the settings
whose worst case is within 0.5 points of the best worst case, the best mean. ``hold_decay_db_s`` (a hold that
decays) was tried and not kept (:func:`decaying_peaks`).
"""
from __future__ import annotations

import itertools
import typing as tp
from dataclasses import replace

import numpy as np

from benchmarks import extract_synth as synth

TUNING_SEEDS = (100, 1100)
MARGINS_DB = (-3.0, -4.0, -5.0)
HOLD_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
HOLD_DECAYS_DB_S = (0.0, 5.0, 10.0)


def tracker_inputs(case: synth.MelodyCase) -> tp.Dict[str, np.ndarray]:
    """The salience, fundamental levels and active frames the tracker sees for one case (computed once)."""
    from jasco_runtime.extract import lead, pitch_model, reference, salience
    from jasco_runtime.extract.audio import mono_at

    mono = mono_at(case.audio, case.sample_rate, pitch_model.SAMPLE_RATE)
    act = reference._model().activations(mono)
    first = salience.FIRST_MIDI - pitch_model.BASE_MIDI
    sal = np.maximum(act.semitones(), act.note)[:, first:first + salience.N_ROWS]
    levels = lead.fundamental_levels(mono, pitch_model.SAMPLE_RATE, pitch_model.HOP, sal.shape[0],
                                     salience.FIRST_MIDI, salience.N_ROWS)
    return {"sal": sal, "levels": levels, "n": int(case.audio.shape[-1] / case.sample_rate * salience.FRAME_RATE)}


def decaying_peaks(cand: np.ndarray, levels: np.ndarray, db_per_frame: float) -> np.ndarray:
    """Like :func:`lead.contour_peaks`, the held peak falling ``db_per_frame`` per frame (never below the level)."""
    out = np.full(cand.shape, -np.inf)
    peak = np.full(cand.shape[1], -np.inf)
    for t in range(cand.shape[0]):
        peak = np.where(cand[t], np.maximum(peak - db_per_frame, levels[t]), -np.inf)
        out[t] = peak
    return out


def accuracy(inputs: tp.Dict[str, np.ndarray], truth: np.ndarray, params: tp.Any, decay_db_s: float) -> float:
    from jasco_runtime.extract import lead, pitch_model, salience

    original = lead.contour_peaks
    if decay_db_s:
        lead.contour_peaks = lambda c, lv: decaying_peaks(c, lv, decay_db_s / pitch_model.FRAME_RATE)
    try:
        rows = lead.track(inputs["sal"], inputs["levels"], params)
    finally:
        lead.contour_peaks = original
    sal = salience.resample_one_hot(salience.one_hot(rows), pitch_model.FRAME_RATE, int(inputs["n"]))
    return synth.melody_scores(sal, truth)["pitch_within_semitone"]


def main() -> int:
    from jasco_runtime.extract import lead

    cases = [(c.name, tracker_inputs(c), c.truth) for base in TUNING_SEEDS for c in synth.melody_cases(seed_base=base)]
    rows = []
    for margin, weight, decay in itertools.product(MARGINS_DB, HOLD_WEIGHTS, HOLD_DECAYS_DB_S):
        if weight == 0 and decay:
            continue
        params = replace(lead.LeadParams(), octave_margin_db=margin, hold_weight=weight)
        acc = np.array([accuracy(inp, truth, params, decay) for _, inp, truth in cases])
        rows.append((float(acc.min()), float(acc.mean()), margin, weight, decay))
        print(f"margin {margin:+.0f} dB  hold {weight:.2f}  decay {decay:4.1f} dB/s: worst {100 * acc.min():.1f} %  "
              f"mean {100 * acc.mean():.2f} %  ({cases[int(acc.argmin())][0]})", flush=True)
    best_worst = max(r[0] for r in rows)
    chosen = max((r for r in rows if r[0] >= best_worst - 0.005), key=lambda r: r[1])
    print(f"chosen: margin {chosen[2]:+.0f} dB, hold {chosen[3]:.2f}, decay {chosen[4]:.0f} dB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
