"""Bounded memory and time on every input (issue 20 §2; sweep cases A18, A19, U07, O11, H51, P06): a long drum
file is read only as far as the song needs, windows and prompts per call are capped with one-line errors."""
from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from jasco_runtime.errors import InputError

SR_IN = 44100


@pytest.fixture(scope="module")
def long_stem(tmp_path_factory):
    """5 minutes of 44.1-kHz mono PCM16 noise bursts (26 MB on disk, 53 MB as float32)."""
    rng = np.random.default_rng(0)
    n = 5 * 60 * SR_IN
    wav = (0.3 * rng.standard_normal(n) * (np.arange(n) % 11025 < 800)).astype(np.float32)
    path = tmp_path_factory.mktemp("stems") / "long.wav"
    sf.write(str(path), wav, SR_IN, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def provider(tiny_engines):
    from jasco_runtime.conditioning import ConditionProvider
    from jasco_runtime.export_folder import ExportFolder

    return ConditionProvider(ExportFolder.open(tiny_engines.out))


def _resolved(provider, **kw):
    from jasco_runtime.request import GenerationRequest

    return GenerationRequest(["x"], steps=1, **kw).resolved(provider.folder.defaults)


def test_a_long_drum_file_is_read_only_as_far_as_the_clip_needs(provider, long_stem):
    """A18: a 2-h file for a 10-s clip took 12.4 GB.  The bounded read's stem equals the one from the whole file
    (the resampler's margin is read too), and the peak of Python allocations stays far below the file's size."""
    from jasco_runtime import audio_io

    tracemalloc.start()
    prepared = provider.prepare(_resolved(provider, drums=long_stem))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    wav, sr = sf.read(str(long_stem), dtype="float32", always_2d=True)
    whole = audio_io.prepare_drums(wav.T, sr, provider.folder.sample_rate, provider.folder.duration)
    np.testing.assert_allclose(prepared.windows[0].drums, whole, atol=1e-6)
    assert peak < 25e6, f"peak {peak / 1e6:.1f} MB while preparing a 10-s clip from a 5-min file"


def test_a_long_song_reads_the_stem_up_to_its_end(provider, long_stem):
    prepared = provider.prepare(_resolved(provider, drums=long_stem, duration=30))
    assert len(prepared.windows) == 4
    last = prepared.windows[-1].drums
    wav, sr = sf.read(str(long_stem), dtype="float32", frames=31 * SR_IN)
    from jasco_runtime import audio_io

    whole = audio_io.prepare_drums(wav[None], sr, 32000, 30.0)
    np.testing.assert_allclose(last, whole[20 * 32000:30 * 32000], atol=1e-6)


def test_an_http_drums_upload_is_decoded_only_as_far_as_the_song_needs(tiny_engines, long_stem):
    """U07: a 20-min upload within the size limit pushed the ingress from 0.5 to 4.4 GB."""
    from jasco_runtime.export_folder import ExportFolder
    from jasco_serve.inputs import InputChecker

    checker = InputChecker(ExportFolder.open(tiny_engines.out))
    data = long_stem.read_bytes()
    tracemalloc.start()
    parsed = checker.from_form({"text": "x", "steps": "1"}, {"drums": data})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.request.windows[0].drums.shape == (320000,)
    assert peak < 25e6 + len(data), f"peak {peak / 1e6:.1f} MB"


def test_windows_are_capped_by_a_minimum_hop(provider):
    """O11: --duration 30 --overlap 9.989 planned 1001 windows (593 s on the tiny model)."""
    with pytest.raises(InputError, match=r"overlap must be between 0.02 s .* and 9 s .* less 1 s between window "
                                         r"starts\), got 9.989 s"):
        provider.prepare(_resolved(provider, duration=30, overlap=9.989))
    assert len(provider.prepare(_resolved(provider, duration=60, overlap=9)).plan.windows) == 51


def test_prompts_per_call_are_capped(provider):
    """P06/H51: a 105 k-line prompts file was accepted and died in an allocation failure."""
    from jasco_runtime.request import MAX_PROMPTS, GenerationRequest

    with pytest.raises(InputError, match=f"at most {MAX_PROMPTS}"):
        GenerationRequest(["x"] * (MAX_PROMPTS + 1)).resolved(provider.folder.defaults)
    GenerationRequest(["x"] * MAX_PROMPTS, steps=1).resolved(provider.folder.defaults)


def test_overlap_without_duration_is_refused(provider):
    """O09/H49: --overlap without --duration was silently ignored."""
    with pytest.raises(InputError, match="overlap applies to songs longer than one window; give a duration"):
        _resolved(provider, overlap=3)


def test_a_lone_surrogate_in_a_prompt_is_an_input_error(provider):
    """H42: a lone surrogate in text reached the tokenizer and became a 500."""
    from jasco_runtime.request import GenerationRequest

    with pytest.raises(InputError, match="lone UTF-16 surrogate"):
        GenerationRequest(["\ud800"]).resolved(provider.folder.defaults)


def test_wav_bytes_bounded_read_is_exact():
    from jasco_runtime import audio_io

    buf = io.BytesIO()
    x = np.random.default_rng(1).standard_normal((2, 48000)).astype(np.float32) * 0.1
    sf.write(buf, x.T, 48000, format="WAV", subtype="FLOAT")
    wav, sr = audio_io.read_audio_bytes(buf.getvalue(), max_seconds=0.25)
    assert sr == 48000 and wav.shape == (2, 12000)
    np.testing.assert_array_equal(wav, x[:, :12000])
