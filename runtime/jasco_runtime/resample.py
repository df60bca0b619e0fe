"""Band-limited resampling as julius' ``resample_frac`` computes it, in numpy (no torch).

audiocraft resamples drum stems with ``julius.resample_frac`` (audiocraft/data/audio_utils.py
``convert_audio``; BEHAVIOUR.md §5), so the runtime reproduces it rather than using another resampler:
after dividing both rates by their gcd, output sample ``j·new + i`` is input frame ``j`` (stride ``old``)
convolved with windowed-sinc kernel ``i`` (J. O. Smith's algorithm, https://ccrma.stanford.edu/~jos/resample/).
The kernels are evaluated in float32 step by step as julius does; the convolution accumulates in float64
(julius: a float32 ``conv1d``), so outputs agree with julius to float32 rounding.
"""
from __future__ import annotations

import math
import typing as tp

import numpy as np

from .errors import InputError

ZEROS = 24  # julius default: zero crossings kept in the sinc
ROLLOFF = 0.945  # julius default: low-pass at rolloff · min(old, new) / 2
MAX_KERNEL_TAPS = 1 << 26  # new · taps after gcd reduction; 44.1 kHz → 32 kHz needs 163 520


def reduced_rates(old_sr: int, new_sr: int) -> tp.Tuple[int, int]:
    """Both rates divided by their gcd (julius ResampleFrac.__init__)."""
    gcd = math.gcd(old_sr, new_sr)
    return old_sr // gcd, new_sr // gcd


def kernel_width(old: int, new: int, zeros: int = ZEROS, rolloff: float = ROLLOFF) -> int:
    """Half-width of the sinc support, in input samples (julius ``_width``)."""
    return math.ceil(zeros * old / (min(old, new) * rolloff))


def sinc_kernels(old: int, new: int, rows: tp.Optional[range] = None, zeros: int = ZEROS,
                 rolloff: float = ROLLOFF) -> np.ndarray:
    """float32 kernels [len(rows), 2·width + old] for reduced rates, each normalised to sum 1.

    Row ``i`` samples sinc(π·t)·cos²(π·t / 2·zeros) at t = (idx/old − i/new)·sr, clamped to ±zeros,
    with sr = rolloff · min(old, new) (julius ResampleFrac._init_kernels); float32 like julius.
    """
    rows = range(new) if rows is None else rows
    sr = min(new, old) * rolloff
    width = kernel_width(old, new, zeros, rolloff)
    f32 = np.float32
    idx = np.arange(-width, width + old, dtype=f32) / f32(old)
    shift = np.array([-i / new for i in rows], dtype=np.float64).astype(f32)[:, None]
    t = (shift + idx) * f32(sr)
    np.clip(t, -zeros, zeros, out=t)
    t *= f32(math.pi)
    window = np.cos(t / f32(zeros) / f32(2)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, f32(1), np.sin(t) / t)
    kernel = sinc * window
    kernel /= kernel.sum(axis=1, keepdims=True, dtype=f32)
    return kernel


def resampled_length(length: int, old_sr: int, new_sr: int, full: bool = False) -> int:
    """julius' output length: floor (``full``: ceil) of new·length/old, that ratio rounded to float32
    first as julius' ``torch.as_tensor`` does (so a long input can gain a sample over the exact floor)."""
    old, new = reduced_rates(old_sr, new_sr)
    ratio = np.float32(new * length / old)
    return int(np.ceil(ratio) if full else np.floor(ratio))


def resample_frac(x: np.ndarray, old_sr: int, new_sr: int, output_length: tp.Optional[int] = None,
                  full: bool = False, zeros: int = ZEROS, rolloff: float = ROLLOFF) -> np.ndarray:
    """julius.resample_frac in numpy: float32 [..., T] at ``old_sr`` → float32 [..., T'] at ``new_sr``.

    T' is floor(new_sr·T/old_sr) (``full``: the ceil; or ``output_length``, at most the ceil). Edges are
    replicate-padded as in julius. Identity (same array) when the rates agree.
    """
    if not isinstance(old_sr, (int, np.integer)) or not isinstance(new_sr, (int, np.integer)) or old_sr <= 0 or new_sr <= 0:
        raise InputError(f"sample rates must be positive integers, got {old_sr!r} → {new_sr!r}")
    old_sr, new_sr = int(old_sr), int(new_sr)
    old, new = reduced_rates(old_sr, new_sr)
    x = np.asarray(x, dtype=np.float32)
    if old == new:
        return x
    if x.ndim == 0 or x.shape[-1] == 0:
        raise InputError(f"cannot resample an empty signal (shape {list(x.shape)}); give at least one sample")
    width = kernel_width(old, new, zeros, rolloff)
    taps = 2 * width + old
    if new * taps > MAX_KERNEL_TAPS:
        raise InputError(f"cannot resample {old_sr} Hz to {new_sr} Hz: the rates reduce to {old}/{new}, a "
                         f"{new}×{taps} kernel; convert the audio to a common rate (e.g. 44100 or 48000 Hz) first")

    length = x.shape[-1]
    max_length = resampled_length(length, old, new, full=True)
    if output_length is None:
        n_out = max_length if full else resampled_length(length, old, new)
    elif full:
        raise ValueError("give either output_length or full=True, not both")
    elif not 0 <= output_length <= max_length:
        raise ValueError(f"output_length must be between 0 and {max_length}, got {output_length}")
    else:
        n_out = int(output_length)

    # Replicate-pad (width left, width + old right) as julius does. Output frame j is input samples
    # [j·old, j·old + taps) of the padded signal times each kernel row; written polyphase-style as a sum over
    # blocks of `old` samples, each a contiguous [frames, old] @ [old, rows] matmul (BLAS for every rate pair).
    flat = x.reshape(-1, length).astype(np.float64)
    n_frames = length // old + 1
    n_blocks = -(-taps // old)
    padded = np.pad(flat, ((0, 0), (width, width + old)), mode="edge")
    blocks = np.zeros((flat.shape[0], (n_frames - 1 + n_blocks) * old))  # any tail past `taps` meets zero taps
    used = min(blocks.shape[1], padded.shape[1])
    blocks[:, :used] = padded[:, :used]
    blocks = blocks.reshape(flat.shape[0], -1, old)
    y = np.zeros((flat.shape[0], n_frames, new), dtype=np.float64)
    chunk = max(1, (1 << 22) // taps)  # kernel rows at a time: bounded memory for large reduced rates
    for start in range(0, new, chunk):
        stop = min(new, start + chunk)
        kernel = np.zeros((stop - start, n_blocks * old), dtype=np.float64)
        kernel[:, :taps] = sinc_kernels(old, new, range(start, stop), zeros, rolloff)
        for b in range(n_blocks):
            y[:, :, start:stop] += blocks[:, b:b + n_frames] @ kernel[:, b * old:(b + 1) * old].T
    y = y.reshape(flat.shape[0], -1)[:, :n_out]
    return y.astype(np.float32).reshape(x.shape[:-1] + (n_out,))
