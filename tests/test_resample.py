"""jasco_runtime.resample (numpy port of julius.resample_frac) against julius itself."""
from __future__ import annotations

import numpy as np
import pytest

from jasco_runtime.errors import InputError
from jasco_runtime.resample import reduced_rates, resample_frac, sinc_kernels

julius = pytest.importorskip("julius")
torch = pytest.importorskip("torch")

PAIRS = [(8000, 32000), (16000, 32000), (22050, 32000), (24000, 32000), (44100, 32000), (48000, 32000),
         (96000, 32000), (32000, 44100), (16000, 24000), (44100, 48000), (48000, 44100)]


def _julius(x: np.ndarray, old_sr: int, new_sr: int, **kw) -> np.ndarray:
    with torch.no_grad():
        return julius.resample_frac(torch.from_numpy(x), old_sr, new_sr, **kw).numpy()


def _signal(channels: int, length: int, seed: int) -> np.ndarray:
    """Half-scale white noise: the worst case for float32 accumulation at audio levels."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (channels, length)).astype(np.float32)


@pytest.mark.parametrize("old_sr, new_sr", PAIRS)
def test_kernels_match_julius(old_sr, new_sr):
    expected = julius.ResampleFrac(old_sr, new_sr).kernel[:, 0].numpy()
    got = sinc_kernels(*reduced_rates(old_sr, new_sr))
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("old_sr, new_sr", PAIRS)
@pytest.mark.parametrize("channels, seconds, extra", [(1, 1.0, 7), (2, 2.0, 331)])
def test_matches_julius(old_sr, new_sr, channels, seconds, extra):
    x = _signal(channels, int(seconds * old_sr) + extra, seed=old_sr + new_sr)
    expected = _julius(x, old_sr, new_sr)
    got = resample_frac(x, old_sr, new_sr)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-6


def test_ten_seconds_of_full_scale_stereo_44k1():
    """The drum-stem case at full scale: the ≤ 1e-6 holds where julius' own float32 rounding is largest."""
    x = np.random.default_rng(7).uniform(-1, 1, (2, 441_000)).astype(np.float32)
    got, expected = resample_frac(x, 44100, 32000), _julius(x, 44100, 32000)
    assert got.shape == expected.shape == (2, 320_000)
    assert np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("old_sr, new_sr", [(44100, 32000), (48000, 32000), (96000, 32000), (8000, 32000), (32000, 44100)])
@pytest.mark.parametrize("length", [1, 2, 3, 5, 17])
def test_very_short_inputs(old_sr, new_sr, length):
    x = _signal(2, length, seed=length)
    for kw in ({}, {"full": True}):
        expected = _julius(x, old_sr, new_sr, **kw)
        got = resample_frac(x, old_sr, new_sr, **kw)
        assert got.shape == expected.shape
        assert got.size == 0 or np.abs(got - expected).max() <= 1e-6


@pytest.mark.parametrize("length", [300157, 300044, 441000, 441001])
def test_output_length_follows_julius_float32_rounding(length):
    """julius rounds new·T/old to float32 before floor / ceil: 300157 samples give 217801 (exact floor 217800)
    and with full=True 300044 give 217719 (exact ceil 217720)."""
    x = np.zeros(length, np.float32)
    for kw in ({}, {"full": True}):
        assert resample_frac(x, 44100, 32000, **kw).shape == _julius(x, 44100, 32000, **kw).shape


def test_output_length_argument_and_batch_shape():
    x = _signal(6, 4411, seed=3).reshape(2, 3, 4411)
    expected = _julius(x, 44100, 32000, output_length=3000)
    got = resample_frac(x, 44100, 32000, output_length=3000)
    assert got.shape == expected.shape == (2, 3, 3000)
    assert np.abs(got - expected).max() <= 1e-6
    for bad in ({"output_length": 3202}, {"output_length": -1}, {"output_length": 10, "full": True}):
        with pytest.raises(ValueError):
            _julius(x, 44100, 32000, **bad)
        with pytest.raises(ValueError):
            resample_frac(x, 44100, 32000, **bad)


def test_same_rate_is_identity():
    x = _signal(2, 1000, seed=4)
    assert resample_frac(x, 32000, 32000) is x


@pytest.mark.parametrize("old_sr, new_sr, match", [
    (0, 32000, "positive integers"),
    (44100.0, 32000, "positive integers"),
    (44099, 32000, "convert the audio to a common rate"),  # coprime: julius would build a 32000×44169 kernel
])
def test_bad_rates_are_clear(old_sr, new_sr, match):
    with pytest.raises(InputError, match=match):
        resample_frac(np.zeros((1, 100), np.float32), old_sr, new_sr)


def test_empty_signal_is_clear():
    with pytest.raises(InputError, match="empty"):
        resample_frac(np.zeros((2, 0), np.float32), 44100, 32000)
