"""jasco-run / JascoPipeline against the PyTorch reference, torch-free import, CLI behaviour."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, shared_path

PROMPTS = ["upbeat funk groove", "calm piano ballad with a long intro"]
CHORDS = [("C", 0.0), ("F", 2.5), ("G", 5.0), ("C", 7.5)]
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "


@pytest.fixture(scope="module")
def pipe(tiny_engines):
    from jasco_runtime import JascoPipeline

    return JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"])


def _drums() -> tuple[np.ndarray, int]:
    import soundfile as sf

    wav, sr = sf.read(str(shared_path("assets", "sep_drums_1.mp3")), dtype="float32", always_2d=True)
    return wav.T, sr


def _reference(tiny_cd, noise, drums=None, sr=32000, **params):
    tiny_cd.set_generation_params(cfg_coef_all=1.25, cfg_coef_txt=2.5, **params)
    return tiny_cd.generate_music(PROMPTS, chords=CHORDS, drums_wav=None if drums is None else torch.from_numpy(drums),
                                  drums_sample_rate=sr, init_noise=torch.from_numpy(noise), return_output=True)


def test_runtime_imports_with_only_numpy_soundfile_tokenizers():
    """Edge targets often have no onnxruntime (TensorRT only): every optional library is blocked here."""
    blocked = ["torch", "transformers", "onnxruntime", "tensorrt", "polygraphy", "soxr", "julius", "tqdm", "onnx", "scipy"]
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
            + "import jasco_runtime, jasco_runtime.pipeline, jasco_runtime.cli, jasco_runtime.chords, "
              "jasco_runtime.guidance, jasco_runtime.audio_io, jasco_runtime.resample, jasco_runtime.solvers\n"
              "from jasco_runtime.backends import available_backends\nprint(available_backends())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_runtime_import_does_not_need_torch():
    code = BLOCK_TORCH + "import jasco_runtime, jasco_runtime.pipeline, jasco_runtime.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_euler10_with_real_drums_matches_reference(pipe, tiny_cd):
    drums, sr = _drums()
    noise = np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32)
    ref = _reference(tiny_cd, noise, drums, sr, euler=True, euler_steps=10)
    res = pipe.generate(PROMPTS, chords=CHORDS, drums=drums, drums_sample_rate=sr, cfg_coef_all=1.25, cfg_coef_txt=2.5,
                        solver="euler", steps=10, init_noise=noise, progress=False)
    assert res.nfe == 10 and ref.nfe == 10
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-4
    assert np.abs(res.audio - ref.audio.numpy()).max() <= 1e-4
    assert set(res.timings) >= {"text_encoder", "drums_encoder", "flow", "decoder", "total"}


def test_dopri5_tracks_reference(pipe, tiny_cd):
    noise = np.random.default_rng(1).standard_normal((2, 500, 128)).astype(np.float32)
    ref = _reference(tiny_cd, noise, ode_rtol=1e-4, ode_atol=1e-4)
    res = pipe.generate(PROMPTS, chords=CHORDS, cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="dopri5", rtol=1e-4,
                        atol=1e-4, init_noise=noise, progress=False)
    assert abs(res.nfe - ref.nfe) <= 0.1 * ref.nfe
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-3


def test_second_order_solvers_approach_the_fine_solution(pipe):
    noise = np.random.default_rng(2).standard_normal((1, 500, 128)).astype(np.float32)
    kw = dict(chords=CHORDS, cfg_coef_all=1.25, cfg_coef_txt=2.5, init_noise=noise, progress=False)
    fine = pipe.generate(["funk"], solver="dopri5", rtol=1e-6, atol=1e-6, **kw).latents
    err = {s: np.abs(pipe.generate(["funk"], solver=s, steps=8, **kw).latents - fine).max() for s in ("euler", "midpoint", "heun")}
    assert err["midpoint"] < err["euler"] and err["heun"] < err["euler"]


def test_low_memory_holds_one_graph_at_a_time_with_identical_results(pipe, tiny_engines, monkeypatch):
    from jasco_runtime import JascoPipeline
    from jasco_runtime import pipeline as pipeline_mod

    live, peak, opened = set(), [0], []
    real_open = pipeline_mod.open_engine

    def counting_open(folder, key, providers=None):
        engine = real_open(folder, key, providers)
        live.add(key.graph)
        opened.append(key.graph)
        peak[0] = max(peak[0], len(live))
        real_close = engine.close
        engine.close = lambda: (live.discard(key.graph), real_close())
        return engine

    monkeypatch.setattr(pipeline_mod, "open_engine", counting_open)
    lean = JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"], low_memory=True)
    assert not live  # nothing is opened before a generation needs it
    drums, sr = _drums()
    noise = np.random.default_rng(5).standard_normal((2, 500, 128)).astype(np.float32)
    kw = dict(chords=CHORDS, drums=drums, drums_sample_rate=sr, cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler",
              steps=3, init_noise=noise, progress=False)
    with lean:
        got = lean.generate(PROMPTS, **kw)
        # one stage at a time: the flow step with its weightless solver_step, every other graph alone
        assert peak[0] == 2 and opened == ["text_encoder", "drums_encoder", "flow_step", "solver_step", "encodec_decoder"]
    assert not live  # closing the pipeline closes the graph still open
    want = pipe.generate(PROMPTS, **kw)
    np.testing.assert_array_equal(got.latents, want.latents)
    np.testing.assert_array_equal(got.audio, want.audio)


def test_low_memory_reports_a_missing_graph_when_opened(tiny_engines, tmp_path):
    import shutil

    from jasco_runtime import JascoPipeline
    from jasco_runtime.errors import InputError

    copy = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, copy)
    (copy / "encodec_decoder.fp32.onnx").unlink()
    with pytest.raises(InputError, match="encodec_decoder.fp32.onnx is missing"):
        JascoPipeline.from_dir(copy, backend="onnxruntime", providers=["cpu"], low_memory=True)


def _run(*args: str, block_torch: bool = True) -> subprocess.CompletedProcess:
    code = (BLOCK_TORCH if block_torch else "") + "from jasco_runtime.cli import main; raise SystemExit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_generates_wavs_without_torch(tiny_engines, tmp_path):
    import soundfile as sf

    out = tmp_path / "song.wav"
    r = _run("--engines", str(tiny_engines.out), "--text", "funk", "--text", "piano", "--chords", "C:0 F:4 G:6",
             "--drums", str(shared_path("assets", "sep_drums_1.mp3")), "--steps", "3", "--seed", "1", "--out", str(out),
             "--save-latents", str(tmp_path / "lat.npy"), "--json", "--no-progress", "--low-memory")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["nfe"] == 3 and len(summary["outputs"]) == 2
    for p in summary["outputs"]:
        audio, sr = sf.read(p)
        assert sr == 32000 and audio.shape == (320000,) and np.isfinite(audio).all()
    assert np.load(tmp_path / "lat.npy").shape == (2, 500, 128)


@pytest.mark.parametrize("args, message", [
    (["--engines", "/nonexistent/engines"], "does not exist"),
    (["--melody", "MELODY"], "no melody conditioner"),
    (["--chords", "C:zero"], "C:zero"),
    (["--drums", "BADAUDIO"], "BADAUDIO"),
])
def test_cli_bad_input_is_one_line_exit_2_no_file(tiny_engines, tmp_path, args, message):
    melody = tmp_path / "m.npy"
    np.save(melody, np.zeros((53, 500), np.float32))
    bad_audio = tmp_path / "bad.wav"
    bad_audio.write_bytes(b"RIFF not really a wav")
    args = [str(melody) if a == "MELODY" else str(bad_audio) if a == "BADAUDIO" else a for a in args]
    message = str(bad_audio) if message == "BADAUDIO" else message
    if "--engines" not in args:
        args = ["--engines", str(tiny_engines.out)] + args
    out = tmp_path / "o.wav"
    r = _run(*args, "--text", "x", "--steps", "1", "--out", str(out), "--no-progress")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.suffix == ".wav" and p != bad_audio] == []


def test_manifest_schema_mismatch_is_clear(tiny_engines, tmp_path):
    import shutil

    copy = tmp_path / "eng"
    shutil.copytree(tiny_engines.out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = "9.0"
    (copy / "manifest.json").write_text(json.dumps(m))
    r = _run("--engines", str(copy), "--text", "x", "--out", str(tmp_path / "o.wav"))
    assert r.returncode == 2 and "schema" in r.stderr


def test_prompt_longer_than_the_engine_profile_is_clear(pipe):
    from jasco_runtime import InputError

    limit = pipe.manifest.graphs["text_encoder"].max_size("text_len")
    with pytest.raises(InputError, match=rf"at most {limit}.*--max-text-tokens"):
        pipe.generate(["drums " * (limit + 5)], steps=1, progress=False)


def test_no_backend_installed_is_a_clear_error(tiny_engines, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + "sys.modules['onnxruntime'] = None; from jasco_runtime.cli import main; "
         "raise SystemExit(main())", "--engines", str(tiny_engines.out), "--text", "x", "--out", str(tmp_path / "o.wav")],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install onnxruntime" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.wav").exists()


@pytest.fixture(scope="module")
def melody_pipe(tiny_hub, tmp_path_factory):
    from jasco_export.exporter import ExportOptions, run_export
    from jasco_runtime import JascoPipeline

    res = run_export(ExportOptions(model="jasco-tiny/chords-drums-melody", out=tmp_path_factory.mktemp("cdm") / "e",
                                   precisions=("fp32",), end_to_end=False))
    return JascoPipeline.from_dir(res.out, backend="onnxruntime", providers=["cpu"])


@pytest.mark.parametrize("chords", [CHORDS, None], ids=["chords", "no-chords"])
def test_melody_model_matches_reference(melody_pipe, tiny_cdm, chords):
    """Melody projection in numpy, zero-padding after projection, and the melody kept in the Text/Null
    terms when chords are absent (BEHAVIOUR §2, §9) — against the PyTorch reference."""
    salience = np.load(shared_path("assets", "salience_1.npy"))[:, :450]  # a short melody: rows 450-499 → 0
    noise = np.random.default_rng(5).standard_normal((2, 500, 128)).astype(np.float32)
    tiny_cdm.set_generation_params(cfg_coef_all=1.25, cfg_coef_txt=2.5, euler=True, euler_steps=3)
    ref = tiny_cdm.generate_music(PROMPTS, chords=chords, melody_salience_matrix=torch.from_numpy(salience),
                                  init_noise=torch.from_numpy(noise), return_output=True)
    res = melody_pipe.generate(PROMPTS, chords=chords, melody=salience.T, cfg_coef_all=1.25, cfg_coef_txt=2.5,
                               solver="euler", steps=3, init_noise=noise, progress=False)
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-4
    assert np.abs(res.audio - ref.audio.numpy()).max() <= 1e-4


def test_asking_for_a_precision_that_was_not_exported_is_clear(tiny_engines, tmp_path):
    """No silent fp32 fallback for the flow step (the tiny export has fp32 + fp16, no int8)."""
    r = _run("--engines", str(tiny_engines.out), "--precision", "int8", "--text", "x", "--out", str(tmp_path / "o.wav"))
    assert r.returncode == 2 and "no int8 flow_step" in r.stderr and "--precision fp32,int8" in r.stderr


def test_engine_set_opens_and_closes_as_declared():
    from jasco_runtime.engine_set import EngineSet

    events = []

    class Fake:
        def __init__(self, name):
            self.name = name
            events.append(("open", name))

        def close(self):
            events.append(("close", self.name))

    eager = EngineSet(["a", "b"], Fake)
    assert eager.opened == ["a", "b"] and eager["b"] is eager["b"]
    eager.close()
    assert events == [("open", "a"), ("open", "b"), ("close", "a"), ("close", "b")] and eager.opened == []
    events.clear()
    lazy = EngineSet(["a", "b"], Fake, one_at_a_time=True)
    assert events == [] and lazy.get("c") is None
    first = lazy["a"]
    assert lazy["a"] is first and lazy.opened == ["a"]
    lazy["b"]
    assert events == [("open", "a"), ("close", "a"), ("open", "b")] and lazy.opened == ["b"]
    with pytest.raises(TypeError, match="low_memory"):
        lazy["a"] = Fake("replacement")  # it would be lost at the next switch
    with pytest.raises(KeyError):
        lazy["missing"]
    lazy.close()
    assert events[-1] == ("close", "b") and lazy.opened == []
    events.clear()
    staged = EngineSet(["a", "b", "c"], Fake, one_at_a_time=True, together=[("b", "c")])
    staged["c"]  # a member of a stage opens the whole stage
    assert staged.opened == ["b", "c"] and staged["b"] is staged["b"] and events == [("open", "b"), ("open", "c")]
    staged["a"]
    assert staged.opened == ["a"] and events[2:] == [("close", "b"), ("close", "c"), ("open", "a")]
    staged.close()
    eager = EngineSet(["a"], Fake)
    original, replacement = eager["a"], Fake("replacement")
    eager["a"] = replacement  # a wrapper in place of a graph; the caller keeps (and closes) the original
    assert eager["a"] is replacement and ("close", "a") not in events[-2:]
