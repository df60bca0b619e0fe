"""Chord and melody extraction on synthesized material with known truth, and extraction time per minute of audio.

    python -m benchmarks.extract_quality [--out benchmarks/results/extract]

Chords: 3 progressions (triads, sevenths, inversions; 8 chords of 2.5 s) × 32/44.1/48 kHz × with/without a drum
loop; score = fraction of 50-fps frames with the right root and major/minor. Melody: 8 leads (timbres, vibrato,
pads, bass, drums; lines the tracker was not tuned on); score = fraction of voiced frames within a semitone.
Goals (issue 19): ≥ 90 % each. Writes chords.json, melody.json, timing.json and README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import typing as tp
from pathlib import Path

import numpy as np

from benchmarks import extract_synth as synth

GOAL = 0.90


def chord_results() -> tp.List[tp.Dict[str, tp.Any]]:
    from jasco_runtime import extract
    from jasco_runtime.extract.chordino import chord_frames

    rows = []
    for case in synth.chord_cases():
        progression = extract.chords(case.audio, case.sample_rate)
        frames = chord_frames(progression, synth.FRAME_RATE, len(case.truth))
        rows.append({"case": case.name, "sample_rate": case.sample_rate, "played": case.chords,
                     "extracted": progression, "root_and_quality_frames": round(synth.chord_accuracy(frames, case.truth), 4)})
    return rows


def melody_results() -> tp.List[tp.Dict[str, tp.Any]]:
    from jasco_runtime import extract

    rows = []
    for case in synth.melody_cases():
        sal = extract.melody(case.audio, case.sample_rate)
        scores = synth.melody_scores(sal, case.truth)
        rows.append({"case": case.name, "sample_rate": case.sample_rate,
                     **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}})
    return rows


def song(seconds: float, sr: int = 44100) -> np.ndarray:
    """A lead over pad, bass and drums, ``seconds`` long (the timing material)."""
    return synth.melody("timing", sr, "saw", seconds=seconds, drums=True, seed=7).audio


def timing(seconds: float = 60.0, repeats: int = 2) -> tp.Dict[str, tp.Any]:
    from jasco_runtime import extract

    sr = 44100
    audio = song(seconds, sr)
    extract.melody(audio[:, :sr], sr)  # load the model once
    out: tp.Dict[str, tp.Any] = {"audio_seconds": seconds, "sample_rate": sr, "cpu": platform.processor() or
                                 platform.machine(), "cpu_count": os.cpu_count()}
    for name, fn in (("chords", extract.chords), ("melody", extract.melody)):
        best = min(_timed(fn, audio, sr) for _ in range(repeats))
        out[f"{name}_s_per_minute"] = round(best * 60.0 / seconds, 3)
    return out


def _timed(fn: tp.Callable, audio: np.ndarray, sr: int) -> float:
    clock = time.perf_counter()
    fn(audio, sr)
    return time.perf_counter() - clock


def report(chords: tp.Sequence[tp.Dict], melody: tp.Sequence[tp.Dict], t: tp.Dict) -> str:
    lines = ["# Extraction quality on synthesized material", "",
             "`python -m benchmarks.extract_quality` (numbers below are from that run). Goal: ≥ 90 % per metric.", "",
             "## Chords (Chordino): frames with the right root and major/minor", "", "| case | rate | frames right |",
             "| --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['sample_rate']} | {100 * r['root_and_quality_frames']:.1f} % |" for r in chords]
    acc = [r["root_and_quality_frames"] for r in chords]
    lines += ["", f"mean {100 * np.mean(acc):.1f} %, min {100 * np.min(acc):.1f} %, "
                  f"{sum(a >= GOAL for a in acc)}/{len(acc)} cases ≥ 90 %", "",
              "## Melody (basic-pitch nmp.onnx + lead tracking): voiced frames within a semitone", "",
              "| case | rate | within a semitone | voicing recall | voiced in rests |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['sample_rate']} | {100 * r['pitch_within_semitone']:.1f} % | "
              f"{100 * r['voicing_recall']:.1f} % | {100 * r['voicing_false_alarm']:.1f} % |" for r in melody]
    acc = [r["pitch_within_semitone"] for r in melody]
    frames = sum(r["voiced_frames"] for r in melody)
    pooled = sum(r["pitch_within_semitone"] * r["voiced_frames"] for r in melody) / max(frames, 1)
    lines += ["", f"mean {100 * np.mean(acc):.1f} %, pooled over all voiced frames {100 * pooled:.1f} %, min "
                  f"{100 * np.min(acc):.1f} %, {sum(a >= GOAL for a in acc)}/{len(acc)} cases ≥ 90 %.",
              "'voiced in rests': frames where the lead rests but the pad plays and the tracker reports the pad's top "
              "note (the salience, like deepsalience's, has no notion of 'lead only').", "",
              "## Time per minute of audio (CPU)", "",
              f"{t['audio_seconds']:.0f} s of 44.1 kHz audio, best of 2, {t['cpu_count']} cores ({t['cpu']}): chords "
              f"{t['chords_s_per_minute']:.2f} s per minute, melody {t['melody_s_per_minute']:.2f} s per minute.", ""]
    return "\n".join(lines)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the timing song")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    chords, melody, t = chord_results(), melody_results(), timing(a.seconds)
    for name, data in (("chords", chords), ("melody", melody), ("timing", t)):
        (a.out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (a.out / "README.md").write_text(report(chords, melody, t))
    print(report(chords, melody, t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
