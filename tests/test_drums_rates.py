"""Drum stems at rates other than the model's: runtime vs the PyTorch reference (julius, as audiocraft).

BEHAVIOUR.md §5: drums are resampled to 32 kHz with julius.resample_frac, then averaged over channels; the
runtime must reproduce that resampler, not just any good one (a soxr resample moved real-model latents 0.29).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

PROMPTS = ["upbeat funk groove", "calm piano ballad with a long intro"]
CHORDS = [("C", 0.0), ("F", 2.5), ("G", 5.0), ("C", 7.5)]


def drum_stem(sample_rate: int, channels: int, seconds: float = 8.0, bpm: float = 120.0) -> np.ndarray:
    """Synthetic kit [channels, T]: kick on every beat, snare on 2 and 4, hi-hat on eighths (panned)."""
    rng = np.random.default_rng(sample_rate + channels)
    n = int(seconds * sample_rate)
    left, right = np.zeros(n), np.zeros(n)
    beat = 60.0 / bpm
    for k in range(int(seconds / beat * 2)):
        start = int(k * beat / 2 * sample_rate)
        t = np.arange(min(int(0.25 * sample_rate), n - start)) / sample_rate
        hat = np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t / 0.02) * 0.15
        left[start:start + t.size] += hat
        right[start:start + t.size] += 0.4 * hat
        if k % 2 == 0:  # kick: a falling sine
            kick = np.sin(2 * np.pi * (45 * t + 40 * 0.05 * (1 - np.exp(-t / 0.05)))) * np.exp(-t / 0.12) * 0.7
            left[start:start + t.size] += kick
            right[start:start + t.size] += kick
        if k % 4 == 2:  # snare: noise + body tone
            snare = (rng.standard_normal(t.size) * 0.3 + np.sin(2 * np.pi * 190 * t) * 0.3) * np.exp(-t / 0.06)
            left[start:start + t.size] += 0.6 * snare
            right[start:start + t.size] += snare
    wav = np.stack([left, right]) if channels == 2 else 0.5 * (left + right)[None]
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def pipe(tiny_engines):
    from jasco_runtime import JascoPipeline

    return JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"])


@pytest.mark.parametrize("sample_rate, channels, seconds", [(44100, 2, 8.0), (48000, 1, 12.0), (22050, 3, 3.0),
                                                          (96000, 2, 10.0), (16000, 1, 10.0)])
def test_prepared_drums_match_reference(tiny_cd, sample_rate, channels, seconds):
    """Resample per channel, mean, trim / zero-pad: the reference's JASCO.prepare_drums (julius) to 1e-6."""
    from jasco_runtime.audio_io import prepare_drums

    drums = drum_stem(sample_rate, 2, seconds)
    drums = drums[:1] if channels == 1 else np.concatenate([drums, drums[:1] * 0.5])[:channels]
    ref = tiny_cd.prepare_drums(torch.from_numpy(drums), sample_rate).reshape(-1).numpy()
    got = prepare_drums(drums, sample_rate, tiny_cd.sample_rate, tiny_cd.duration)
    assert got.shape == ref.shape == (int(tiny_cd.duration * tiny_cd.sample_rate),)
    assert np.abs(got - ref).max() <= 1e-6


@pytest.mark.parametrize("sample_rate, channels", [(44100, 2), (48000, 1)])
def test_euler10_with_resampled_drums_matches_reference(pipe, tiny_cd, sample_rate, channels):
    drums = drum_stem(sample_rate, channels)
    noise = np.random.default_rng(5).standard_normal((2, 500, 128)).astype(np.float32)
    tiny_cd.set_generation_params(cfg_coef_all=1.25, cfg_coef_txt=2.5, euler=True, euler_steps=10)
    ref = tiny_cd.generate_music(PROMPTS, chords=CHORDS, drums_wav=torch.from_numpy(drums), drums_sample_rate=sample_rate,
                                 init_noise=torch.from_numpy(noise), return_output=True)
    res = pipe.generate(PROMPTS, chords=CHORDS, drums=drums, drums_sample_rate=sample_rate, cfg_coef_all=1.25,
                        cfg_coef_txt=2.5, solver="euler", steps=10, init_noise=noise, progress=False)
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-4


def test_resampling_needs_no_torch_julius_or_soxr():
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ("torch", "julius", "soxr", "scipy"))
            + "import numpy as np\nfrom jasco_runtime.audio_io import prepare_drums\n"
              "out = prepare_drums(np.ones((2, 44100), np.float32), 44100, 32000, 2.0)\n"
              "print(out.shape, round(float(out[:32000].min()), 5), float(out[32000:].max()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "(64000,) 1.0 0.0", r.stderr
