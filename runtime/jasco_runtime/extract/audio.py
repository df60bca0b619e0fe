"""Reference audio → mono float32 at the rate an extractor wants.

The extractors need no bit-exact resampler (julius' :mod:`jasco_runtime.resample` is for the model's drums path),
so this uses scipy's polyphase ``resample_poly`` (Kaiser window), ~50× faster on whole songs."""
from __future__ import annotations

import typing as tp

import numpy as np

from ..errors import InputError

MAX_SECONDS = 30 * 60  # one reference: half an hour at most (the extractors hold the whole song)


def mono_at(wav: np.ndarray, sample_rate: int, rate: int, source: str = "reference audio") -> np.ndarray:
    """[C, T] or [T] audio at ``sample_rate`` → mono float32 [T'] at ``rate``."""
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] == 0:
        raise InputError(f"{source} must be [channels, samples] audio, got shape {list(x.shape)}")
    if x.shape[0] > x.shape[1]:
        raise InputError(f"{source} looks like [samples, channels] ({list(x.shape)}); pass [channels, samples]")
    if not np.isfinite(x).all():
        raise InputError(f"{source} contains NaN or infinite samples")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"{source}: the sample rate must be a positive integer, got {sample_rate!r}")
    seconds = x.shape[-1] / sample_rate
    if seconds > MAX_SECONDS:
        raise InputError(f"{source} is {seconds / 60:.1f} min long; extraction takes at most {MAX_SECONDS // 60} min — "
                         "cut the song first")
    mono = x.mean(axis=0)
    if int(sample_rate) == int(rate):
        return np.ascontiguousarray(mono, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sample_rate), int(rate))
    return np.ascontiguousarray(resample_poly(mono, int(rate) // g, int(sample_rate) // g), dtype=np.float32)


def as_audio(audio: tp.Any, sample_rate: tp.Optional[int]) -> tp.Tuple[np.ndarray, int]:
    """A path (any file libsndfile reads) or an array with its rate → ([C, T] float32, rate)."""
    import os

    from ..audio_io import load_audio

    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise InputError("sample_rate is read from the file; give it only with an array")
        return load_audio(audio)
    if sample_rate is None:
        raise InputError("reference audio given as an array needs its sample_rate")
    return np.asarray(audio, dtype=np.float32), int(sample_rate)
