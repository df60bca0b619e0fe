"""The window plan of a song: how ``duration`` seconds split into 10-s generation windows, and each window's slice
of the song's conditions.  Pure window math (no engines); :mod:`jasco_runtime.longform` generates the windows.

* **Window plan** (:func:`plan_windows`): ``duration`` seconds → N latent frames, covered by windows of T frames that
  start every ``T − overlap`` frames; the last window is aligned to the song's end (its overlap with the one before
  is then longer).  It is the one rule for ``duration`` and ``overlap``.
* **Conditions** come from the global timeline: chords framed from the window's first frame on (audiocraft
  ``construct_frame_chords`` with ``min_timestamp``), the drum stem's and the melody's slices under the window.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

from . import chords as chords_mod
from .checks import number
from .errors import InputError

DEFAULT_OVERLAP = 2.5  # seconds shared by consecutive windows
MIN_HOP = 1.0  # seconds between consecutive window starts at least: bounds the windows (60-s song ≤ 51 windows)


# -- window plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Global frames [start, end) of one generation window; its first ``known`` frames overlap the
    previous window and are constrained to its latents (0 for the first window)."""

    index: int
    start: int
    end: int
    known: int


@dataclass(frozen=True)
class WindowPlan:
    duration: float  # requested seconds
    overlap: float  # requested overlap seconds
    frame_rate: float
    sample_rate: int
    window_frames: int  # T
    samples_per_frame: int
    n_frames: int  # N latent frames of the song (ceil of the samples over samples per frame)
    n_samples: int  # round(duration · sample_rate)
    windows: tp.Tuple[Window, ...]

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    @property
    def seams(self) -> tp.List[int]:
        """Global frame of each window's first new frame after the first window (where a stitched song
        switches from one window's latents to the next)."""
        return [w.start + w.known for w in self.windows[1:]]


def seconds(name: str, value: tp.Any) -> float:
    return number(name, value, unit="seconds")


def plan_windows(duration: float, overlap: tp.Optional[float], window_frames: int, frame_rate: float,
                 samples_per_frame: int, sample_rate: int, max_duration: float) -> WindowPlan:
    """Windows covering ``duration`` seconds, consecutive ones sharing ``overlap`` seconds: the one rule for
    both (the request only checks they are numbers).

    ``duration``: at least one latent frame, at most ``max_duration``.  ``overlap``: at least one frame (no
    overlap would leave the windows without continuation) and at most the window less :data:`MIN_HOP`.  Window k
    starts at frame k·(T − P) (P = overlap frames), the last one at N − T so that it ends with the song; a song of
    at most one window has one window (its audio is trimmed to ``duration``).
    """
    duration = seconds("duration", duration)
    overlap = DEFAULT_OVERLAP if overlap is None else seconds("overlap", overlap)
    window_s = window_frames / frame_rate
    frame_s = 1 / frame_rate
    if duration < frame_s - 1e-9:
        raise InputError(f"duration must be at least one latent frame ({frame_s:g} s), got {duration:g} s")
    if duration > max_duration + 1e-9:
        raise InputError(f"duration {duration:.10g} s is longer than this export's maximum of {max_duration:g} s; "
                         f"ask for at most {max_duration:g} s")
    P = int(round(overlap * frame_rate))
    max_overlap = window_s - MIN_HOP
    if P < 1 or overlap > max_overlap + 1e-9:
        raise InputError(f"overlap must be between {frame_s:g} s (one latent frame) and {max_overlap:g} s (the "
                         f"{window_s:g}-s window less {MIN_HOP:g} s between window starts), got {overlap:g} s")
    n_samples = int(round(duration * sample_rate))
    N = -(-n_samples // samples_per_frame)
    windows = [Window(0, 0, window_frames, 0)]
    hop = window_frames - P
    while windows[-1].end < N:
        prev = windows[-1]
        start = min(prev.start + hop, N - window_frames)
        windows.append(Window(len(windows), start, start + window_frames, prev.end - start))
    return WindowPlan(duration, overlap, float(frame_rate), int(sample_rate), int(window_frames),
                      int(samples_per_frame), N, n_samples, tuple(windows))


# -- per-window conditions -------------------------------------------------------------------------
def window_chords(progression: tp.Sequence[tp.Tuple[str, float]], mapping: tp.Mapping[str, int],
                  frame_rate: float, window_seconds: float, window: Window) -> np.ndarray:
    """Chord index per frame of ``window`` [T], framed on the song's timeline from its first frame on:
    changes before the window start are consumed there, so the chord active then sits at frame 0."""
    return chords_mod.frame_chords(progression, mapping, frame_rate, window_seconds, min_timestamp=window.start)


def fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad a mono waveform to ``n`` samples."""
    wav = wav[:n]
    if wav.shape[0] < n:
        wav = np.concatenate([wav, np.zeros(n - wav.shape[0], wav.dtype)])
    return wav


def window_drums(song_drums: np.ndarray, plan: WindowPlan, window: Window) -> np.ndarray:
    """The drum stem's samples under ``window`` (the song stem is already fitted to the windows)."""
    a = window.start * plan.samples_per_frame
    return song_drums[a:a + plan.window_samples]


def window_melody(melody: np.ndarray, window: Window) -> np.ndarray:
    """Salience frames under ``window`` [bins, ≤ T] (shorter at the melody's end: zero-padded after
    the projection, as for a short 10-s melody)."""
    return melody[:, window.start:window.end]


def window_descriptions_for(plan: WindowPlan, descriptions: tp.Sequence[tp.Optional[str]],
                            per_window: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]]
                            ) -> tp.List[tp.List[tp.Optional[str]]]:
    """The prompts of each window: ``descriptions`` for all, or ``per_window[k]`` (one list of B prompts
    per window) when given."""
    if per_window is None:
        return [list(descriptions)] * plan.n_windows
    per_window = [[p] if isinstance(p, str) else list(p) for p in per_window]
    if len(per_window) != plan.n_windows:
        raise InputError(f"window_descriptions has {len(per_window)} entries but this duration/overlap makes "
                         f"{plan.n_windows} windows; give one prompt list per window")
    bad = [k for k, p in enumerate(per_window) if len(p) != len(descriptions)]
    if bad:
        raise InputError(f"window_descriptions[{bad[0]}] has {len(per_window[bad[0]])} prompt(s), expected "
                         f"{len(descriptions)} (one per clip)")
    return per_window


def plan_for_folder(folder: tp.Any, duration: float, overlap: tp.Optional[float] = None) -> WindowPlan:
    """The window plan of ``duration`` seconds for an export folder; the maximum duration is the manifest's
    (``ExportFolder.max_duration``: a decoder exported for one window only serves one window)."""
    if folder.max_duration <= folder.duration and seconds("duration", duration) > folder.duration + 1e-9:
        raise InputError(f"the decoder of {folder.folder} was exported for {folder.duration:g}-s clips only; re-export "
                         "with this version of jasco-export for longer songs")
    return plan_windows(duration, overlap, folder.n_frames, folder.frame_rate, folder.segment_samples // folder.n_frames,
                        folder.sample_rate, max_duration=folder.max_duration)
