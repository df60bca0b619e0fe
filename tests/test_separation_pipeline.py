"""An export with a drum separator: parity gate, the runtime separating by default, --drums-stem, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("demucs")
pytest.importorskip("onnxruntime")


def _run(args, cwd=None):
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / d) for d in ("runtime", "export", "serve", "."))}
    code = "import sys; sys.modules['torch'] = None; from jasco_runtime.cli import main; raise SystemExit(main())"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,  # torch-free
                          env=env, cwd=cwd, timeout=600)


def test_export_with_separator_passes_the_gate_on_every_separator_row(tiny_sep_engines):
    res = tiny_sep_engines
    assert res.parity["passed"] is True
    rows = [r for r in res.parity["rows"] if r["check"].startswith("drums_separator/")]
    # fp32 and fp16, random and realistic cases, both outputs (frequency and time branch)
    assert {(r["precision"], r["check"]) for r in rows} == {
        (p, f"drums_separator/{c}/{o}") for p in ("fp32", "fp16") for c in ("random", "realistic")
        for o in ("drums_spec", "drums_wave")}
    assert all(r["status"] == "PASS" for r in rows)
    assert res.manifest["golden"]["e2e"]["settings"]["drums_separated"] is True  # the e2e drums are a mixture
    sep = res.folder.conditioners["drums"]["separator"]
    assert sep["name"] == "hf://jasco-tiny/htdemucs" and sep["segment_samples"] == 85995
    assert "drums_separator" in res.folder.runtime_graphs()


def test_silence_table_is_unchanged_by_the_separator(tiny_sep_engines, tiny_engines):
    """Dropped rows: zeros through htdemucs are zeros (x·std + mean), so the silence codes stay EnCodec's."""
    from jasco_runtime.tables import load_tables

    with_sep = load_tables(tiny_sep_engines.folder.file("tables"))["drums_silence"]
    without = load_tables(tiny_engines.folder.file("tables"))["drums_silence"]
    assert np.array_equal(with_sep, without)


def test_pipeline_separates_by_default_and_drums_stem_skips(tiny_sep_engines, tiny_cd):
    """The runtime's latents with a mixture follow the reference that separates with demucs; with drums_stem
    they follow the reference that does not."""
    import torch
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_export.reference.separation import load_demucs
    from jasco_runtime.pipeline import JascoPipeline

    mix = synthetic_mixture(4.0, 44100)
    noise = np.random.default_rng(3).standard_normal((1, 500, 128)).astype(np.float32)
    kw = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler", steps=4, init_noise=noise, progress=False,
              drums_sample_rate=44100)
    with JascoPipeline.from_dir(tiny_sep_engines.out, backend="onnxruntime") as pipe:
        separated = pipe.generate(["funk"], drums=mix, **kw)
        stem = pipe.generate(["funk"], drums=mix, drums_stem=True, **kw)
    assert "drums_separator" in separated.timings and "drums_separator" not in stem.timings
    tiny_cd.set_generation_params(cfg_coef_all=1.25, cfg_coef_txt=2.5, euler=True, euler_steps=4)
    tiny_cd.separator = load_demucs("hf://jasco-tiny/htdemucs")
    try:
        ref = {sep: tiny_cd.generate_music(["funk"], drums_wav=torch.from_numpy(mix), drums_sample_rate=44100,
                                           init_noise=torch.from_numpy(noise), return_output=True,
                                           separate_drums=sep).latents.numpy() for sep in (True, False)}
    finally:
        tiny_cd.separator = None
    assert np.abs(separated.latents - ref[True]).max() <= 1e-4
    assert np.abs(stem.latents - ref[False]).max() <= 1e-4
    assert np.abs(ref[True] - ref[False]).max() > 1e-2  # separation changes the conditioning


def test_cli_says_whether_it_separated(tiny_sep_engines, tmp_path):
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_runtime.audio_io import write_wav

    mix = tmp_path / "mix.wav"
    write_wav(mix, synthetic_mixture(3.0, 44100), 44100)
    base = ["--engines", tiny_sep_engines.out, "--text", "funk", "--drums", mix, "--steps", "2", "--seed", "0",
            "--json", "--no-progress"]
    out = _run(base + ["--out", tmp_path / "a.wav"])
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["drums_separated"] is True and "drums_separator" in summary["timings_s"]
    out = _run(base + ["--out", tmp_path / "b.wav", "--drums-stem"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["drums_separated"] is False


def test_cli_bad_separation_requests_are_one_line_exit_2(tiny_engines, tmp_path):
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_runtime.audio_io import write_wav

    mix = tmp_path / "mix.wav"
    write_wav(mix, synthetic_mixture(1.0, 44100), 44100)
    out = _run(["--engines", tiny_engines.out, "--text", "x", "--drums", mix, "--separate-drums", "--out", tmp_path / "o.wav"])
    assert out.returncode == 2 and "has no drum separator" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _run(["--engines", tiny_engines.out, "--text", "x", "--drums-stem", "--out", tmp_path / "o.wav"])
    assert out.returncode == 2 and "give --drums or drop --drums-stem" in out.stderr
    assert not (tmp_path / "o.wav").exists()


def test_export_refuses_a_missing_separator_file(tiny_hub, tmp_path):
    from jasco_export.errors import InputError
    from jasco_export.exporter import ExportOptions, run_export

    with pytest.raises(InputError, match="does not exist"):
        run_export(ExportOptions(model="jasco-tiny/chords-drums", out=tmp_path / "e", separator=str(tmp_path / "x.safetensors")))
    assert not (tmp_path / "e").exists()


def test_serve_inputs_take_drums_stem(tiny_sep_engines, tiny_engines):
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_runtime.audio_io import encode_wav
    from jasco_runtime.errors import InputError
    from jasco_serve.inputs import InputChecker

    upload = encode_wav(synthetic_mixture(1.0, 44100), 44100)
    checker = InputChecker(tiny_sep_engines.folder)
    assert checker.from_form({"text": "x", "drums_stem": "on"}, {"drums": upload}).request.request.drums_stem is True
    assert checker.from_form({"text": "x"}, {"drums": upload}).request.request.drums_stem is None  # default: separate
    with pytest.raises(InputError, match="drums_stem must be true or false"):
        checker.from_form({"text": "x", "drums_stem": "maybe"}, {"drums": upload})
    with pytest.raises(InputError, match="upload drums or drop drums_stem"):
        checker.from_json(b'{"text": "x", "drums_stem": true}')
    with pytest.raises(InputError, match="no drum separator"):
        InputChecker(tiny_engines.folder).from_form({"text": "x", "drums_stem": "false"}, {"drums": upload})


def test_long_song_separates_the_whole_song_once(tiny_sep_engines, monkeypatch):
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_runtime import separation
    from jasco_runtime.pipeline import JascoPipeline

    calls = []
    original = separation.drums.separate_drums
    monkeypatch.setattr(separation.drums, "separate_drums", lambda wav, *a, **k: calls.append(wav.shape) or original(wav, *a, **k))
    with JascoPipeline.from_dir(tiny_sep_engines.out, backend="onnxruntime") as pipe:
        pipe.generate(["funk"], drums=synthetic_mixture(14.0, 44100), drums_sample_rate=44100, solver="euler", steps=1,
                      seed=0, duration=15, progress=False)
        assert calls == [(15 * 32000,)]  # the whole song's drums, once (windows slice the separated stem)
        pipe.generate(["funk"], drums=synthetic_mixture(14.0, 44100), drums_sample_rate=44100, solver="euler", steps=1,
                      seed=0, duration=15, progress=False, drums_stem=True)
        assert len(calls) == 1


@pytest.mark.slow
def test_long_song_separates_once_then_slices_like_the_reference(tiny_sep_engines, tiny_cd, monkeypatch):
    import torch
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_export.reference.longform import generate_song
    from jasco_export.reference.separation import load_demucs
    from jasco_runtime import separation
    from jasco_runtime.pipeline import JascoPipeline

    calls = []
    original = separation.drums.separate_drums
    monkeypatch.setattr(separation.drums, "separate_drums", lambda wav, *a, **k: calls.append(wav.shape) or original(wav, *a, **k))
    mix = synthetic_mixture(14.0, 44100)
    noise = np.random.default_rng(4).standard_normal((1, 750, 128)).astype(np.float32)
    cfg = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5)
    with JascoPipeline.from_dir(tiny_sep_engines.out, backend="onnxruntime") as pipe:
        res = pipe.generate(["funk"], drums=mix, drums_sample_rate=44100, solver="euler", steps=2, init_noise=noise,
                            duration=15, progress=False, **cfg)
    assert calls == [(15 * 32000,)]  # the whole song's drums, once
    tiny_cd.set_generation_params(euler=True, euler_steps=2, **cfg)
    tiny_cd.separator = load_demucs("hf://jasco-tiny/htdemucs")
    try:
        ref = generate_song(tiny_cd, ["funk"], 15.0, drums_wav=torch.from_numpy(mix), drums_sample_rate=44100,
                            init_noise=torch.from_numpy(noise), separate_drums=True)
    finally:
        tiny_cd.separator = None
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-4
