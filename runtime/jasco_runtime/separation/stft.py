"""The STFT / inverse STFT around the htdemucs graph, in numpy (ONNX has no inverse STFT).

demucs computes them with ``torch.stft`` / ``torch.istft`` (demucs/spec.py ``spectro`` / ``ispectro``):
periodic Hann window of ``n_fft`` samples, hop ``n_fft // 4``, ``center=True`` with reflect padding,
``normalized=True`` (×n_fft^-½ forward, ×n_fft^½ inverse), one-sided.  HTDemucs wraps them
(demucs/htdemucs.py ``_spec`` / ``_ispec``) with its own padding so that the spectrogram has exactly
ceil(L / hop) frames: reflect-pad 3·hop/2 on the left and 3·hop/2 + (ceil(L/hop)·hop − L) on the right
(zero-extended first when the signal is too short to reflect, demucs/hdemucs.py ``pad1d``), drop the
Nyquist bin and the 2 frames at each edge; the inverse puts them back as zeros.

The transforms run in float64 and return float32 (complex64): |numpy − torch| ≤ 1e-5 on audio.
"""
from __future__ import annotations

import math

import numpy as np


def hann_window(n: int) -> np.ndarray:
    """``torch.hann_window(n)`` (periodic): 0.5 − 0.5·cos(2πk/n)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[N, L] → [N, frames, n_fft] strided view (frame f starts at f·hop)."""
    n = 1 + (x.shape[-1] - n_fft) // hop
    s0, s1 = x.strides
    return np.lib.stride_tricks.as_strided(x, (x.shape[0], n, n_fft), (s0, hop * s1, s1), writeable=False)


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``torch.stft(x, n_fft, hop, window=hann(n_fft), normalized=True, center=True, pad_mode='reflect',
    return_complex=True)``: [..., L] → complex64 [..., n_fft/2 + 1, frames]."""
    *other, length = x.shape
    flat = np.asarray(x, dtype=np.float64).reshape(-1, length)
    flat = np.pad(flat, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    spec = np.fft.rfft(_frames(flat, n_fft, hop) * hann_window(n_fft), axis=-1) / math.sqrt(n_fft)
    return spec.transpose(0, 2, 1).astype(np.complex64).reshape(*other, n_fft // 2 + 1, -1)


def istft(z: np.ndarray, hop: int, length: int) -> np.ndarray:
    """``torch.istft(z, n_fft, hop, window=hann(n_fft), normalized=True, center=True, length=length)`` with
    n_fft = 2·(freqs − 1): complex [..., freqs, frames] → float32 [..., length]."""
    *other, freqs, n = z.shape
    n_fft = 2 * freqs - 2
    flat = np.asarray(z, dtype=np.complex128).reshape(-1, freqs, n)
    window = hann_window(n_fft)
    frames = np.fft.irfft(flat.transpose(0, 2, 1) * math.sqrt(n_fft), n=n_fft, axis=-1) * window  # [N, n, n_fft]
    total = n_fft + hop * (n - 1)
    out = np.zeros((flat.shape[0], total))
    envelope = np.zeros(total)
    for f in range(n):  # overlap-add: n_fft / hop = 4 frames overlap each sample
        out[:, f * hop:f * hop + n_fft] += frames[:, f]
        envelope[f * hop:f * hop + n_fft] += window ** 2
    start = n_fft // 2
    stop = min(total, start + length)
    y = out[:, start:stop] / envelope[start:stop]
    if y.shape[-1] < length:  # torch.istft zero-pads up to `length`
        y = np.pad(y, ((0, 0), (0, length - y.shape[-1])))
    return y.astype(np.float32).reshape(*other, length)


def pad1d_reflect(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """demucs/hdemucs.py ``pad1d(x, (left, right), mode='reflect')``: reflect padding that zero-extends
    the signal first when it is too short to reflect (length ≤ max(left, right))."""
    length = x.shape[-1]
    widths = [(0, 0)] * (x.ndim - 1)
    if length <= max(left, right):
        extra = max(left, right) - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = np.pad(x, widths + [(extra_left, extra_right)])
        left, right = left - extra_left, right - extra_right
    return np.pad(x, widths + [(left, right)], mode="reflect")


def htdemucs_spec(x: np.ndarray, n_fft: int) -> np.ndarray:
    """HTDemucs ``_spec``: [..., L] → complex64 [..., n_fft/2, ceil(L / hop)] (hop = n_fft/4)."""
    hop = n_fft // 4
    frames = int(math.ceil(x.shape[-1] / hop))
    pad = hop // 2 * 3
    padded = pad1d_reflect(np.asarray(x, dtype=np.float32), pad, pad + frames * hop - x.shape[-1])
    z = stft(padded, n_fft, hop)[..., :-1, :]
    assert z.shape[-1] == frames + 4, (z.shape, frames)
    return z[..., 2:2 + frames]


def htdemucs_ispec(z: np.ndarray, length: int) -> np.ndarray:
    """HTDemucs ``_ispec`` (scale 0): complex [..., n_fft/2, frames] → float32 [..., length]."""
    freqs = z.shape[-2] + 1
    hop = (2 * freqs - 2) // 4
    widths = [(0, 0)] * (z.ndim - 2)
    z = np.pad(z, widths + [(0, 1), (2, 2)])
    pad = hop // 2 * 3
    full = hop * int(math.ceil(length / hop)) + 2 * pad
    return istft(z, hop, full)[..., pad:pad + length]


def to_cac(z: np.ndarray) -> np.ndarray:
    """HTDemucs ``_magnitude`` with ``cac=True``: complex [B, C, F, T] → float32 [B, 2C, F, T]
    (channel 2c = real part of channel c, 2c + 1 = imaginary part)."""
    B, C, F, T = z.shape
    return np.stack([z.real, z.imag], axis=2).reshape(B, 2 * C, F, T).astype(np.float32)


def from_cac(m: np.ndarray) -> np.ndarray:
    """HTDemucs ``_mask`` with ``cac=True`` (the inverse of :func:`to_cac`): [..., 2C, F, T] → complex64 [..., C, F, T]."""
    *other, C2, F, T = m.shape
    m = m.reshape(*other, C2 // 2, 2, F, T)
    return (m[..., 0, :, :] + 1j * m[..., 1, :, :]).astype(np.complex64)
