"""Melody in audiocraft's JASCO format: a binary salience [53, T] at 50 frames/s, rows MIDI 43 (G2) … 95 (B6).

audiocraft computed it with deepsalience (HCQT at 86.13 frames/s, threshold 0.5, bins below G2 dropped, 5-bin
max-pool → 53 semitone rows) and ``MelodyData`` interpolates 86.13 → 50 frames/s, keeping the one-hot of the argmax
row per frame and zeros where the salience is zero (audiocraft/data/jasco_dataset.py). Here the per-frame pitch is
the lead line (:mod:`.lead`) of basic-pitch's salience, and the same resampling turns it into 50-fps one-hots.
"""
from __future__ import annotations

import typing as tp

import numpy as np

FIRST_MIDI = 43
N_ROWS = 53  # MIDI 43..95
FRAME_RATE = 50


def one_hot(rows: np.ndarray, n_rows: int = N_ROWS) -> np.ndarray:
    """Row index per frame (−1 = unvoiced) → float32 [n_rows, T]."""
    out = np.zeros((n_rows, rows.shape[0]), np.float32)
    on = rows >= 0
    out[rows[on], np.nonzero(on)[0]] = 1.0
    return out


def resample_one_hot(sal: np.ndarray, rate: float, n_frames: int, out_rate: float = FRAME_RATE) -> np.ndarray:
    """[R, T] at ``rate`` → [R, n_frames] at ``out_rate``: linear interpolation in time, then the one-hot of the
    argmax row, zero where every row interpolates to zero."""
    t_in = np.arange(sal.shape[1]) / rate
    t_out = np.arange(n_frames) / out_rate
    interp = np.stack([np.interp(t_out, t_in, row, left=0.0, right=0.0) for row in sal]) if sal.shape[1] else \
        np.zeros((sal.shape[0], n_frames))
    rows = np.where(interp.max(axis=0) > 0, interp.argmax(axis=0), -1)
    return one_hot(rows, sal.shape[0])


def plot_piano_roll(sal: np.ndarray, path: tp.Any, title: str = "melody") -> None:
    """A piano roll of a [53, T] salience (matplotlib, the ``bench`` extra) written to ``path`` (a file name or a binary file object; PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = sal.shape[1]
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, T / FRAME_RATE / 2)), 4), dpi=100)
    ax.imshow(sal, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest",
              extent=(0, T / FRAME_RATE, FIRST_MIDI - 0.5, FIRST_MIDI + sal.shape[0] - 0.5))
    octaves = [m for m in range(FIRST_MIDI, FIRST_MIDI + sal.shape[0]) if m % 12 == 0]
    ax.set_yticks(octaves, [f"C{m // 12 - 1}" for m in octaves])
    ax.set_xlabel("seconds")
    ax.set_ylabel("pitch")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
