"""Audio / melody inputs and wav outputs of the runtime (jasco_runtime.audio_io)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from conftest import shared_path
from jasco_runtime import audio_io
from jasco_runtime.errors import InputError


def test_drums_resampled_mixed_down_and_padded():
    sr = 44100
    t = np.arange(int(3 * sr)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    out = audio_io.prepare_drums(stereo, sr, 32000, 10.0)
    assert out.shape == (320000,) and out.dtype == np.float32
    assert (out[3 * 32000 + 100:] == 0).all()  # zero-padded after 3 s
    # a 440 Hz tone stays a 440 Hz tone: its spectrum peaks at 440 Hz
    seg = out[1000:1000 + 32000]
    spectrum = np.abs(np.fft.rfft(seg))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1
    np.testing.assert_allclose(np.abs(seg).max(), 0.5, atol=0.01)


def test_drums_at_model_rate_are_untouched_and_trimmed():
    wav = np.random.default_rng(0).standard_normal((2, 400000)).astype(np.float32)
    out = audio_io.prepare_drums(wav, 32000, 32000, 10.0)
    np.testing.assert_array_equal(out, wav.mean(axis=0)[:320000])


def test_real_mp3_reads():
    wav, sr = audio_io.load_audio(shared_path("assets", "sep_drums_1.mp3"))
    assert wav.ndim == 2 and wav.shape[0] in (1, 2) and sr > 0 and np.abs(wav).max() > 0.01


@pytest.mark.parametrize("shape", [(53, 500), (500, 53)])
def test_melody_orientation(shape, tmp_path):
    mel = np.random.default_rng(1).random(shape).astype(np.float32)
    np.save(tmp_path / "m.npy", mel)
    got = audio_io.load_melody(tmp_path / "m.npy", 53)
    assert got.shape == (53, 500)
    np.testing.assert_array_equal(got, mel if shape[0] == 53 else mel.T)


def test_real_salience_loads():
    assert audio_io.load_melody(shared_path("assets", "salience_1.npy"), 53).shape == (53, 500)


def test_bad_inputs_are_clear(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(InputError, match="cannot read audio file .*bad.wav"):
        audio_io.load_audio(bad)
    np.save(tmp_path / "m.npy", np.zeros((12, 500), np.float32))
    with pytest.raises(InputError, match=r"\[53, T\]"):
        audio_io.load_melody(tmp_path / "m.npy", 53)
    with pytest.raises(InputError, match="NaN"):
        audio_io.prepare_drums(np.full((1, 100), np.nan, np.float32), 32000, 32000, 10.0)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_wav_written_atomically_and_round_trips(subtype, tmp_path):
    clip = (0.5 * np.sin(np.linspace(0, 100, 32000))).astype(np.float32)[None]
    path = tmp_path / "o.wav"
    audio_io.write_wav(path, clip, 32000, subtype=subtype)
    back, sr = sf.read(path, dtype="float32")
    assert sr == 32000 and back.shape == (32000,)
    np.testing.assert_allclose(back, clip[0], atol=1e-4 if subtype == "PCM_16" else 0)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_failed_write_leaves_no_file(tmp_path):
    """soundfile refuses the subtype while the temp file is open: the error surfaces, the temp file is removed."""
    with pytest.raises(ValueError, match="Unknown subtype: 'NOT_A_SUBTYPE'"):
        audio_io.write_wav(tmp_path / "o.wav", np.zeros((1, 10), np.float32), 32000, subtype="NOT_A_SUBTYPE")
    assert list(tmp_path.iterdir()) == []


def test_peak_and_loudness_normalisation():
    clip = (0.1 * np.sin(np.linspace(0, 2000, 64000))).astype(np.float32)[None]
    assert np.abs(audio_io.normalize_clip(clip, 32000, "peak")).max() == pytest.approx(1.0)
    pyln = pytest.importorskip("pyloudnorm")
    loud = audio_io.normalize_clip(clip, 32000, "loudness")
    assert pyln.Meter(32000).integrated_loudness(loud[0].astype(np.float64)) == pytest.approx(-14.0, abs=0.1)
