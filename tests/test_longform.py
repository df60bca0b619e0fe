"""Songs longer than 10 s (issue 11): window plan, timeline conditions, continuation constraint,
stitching, decoder with a dynamic frame axis, CLI, and parity with the PyTorch reference."""
from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from jasco_runtime.errors import InputError
from jasco_runtime.longform import plan_windows, window_melody

CFG = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5)
SR, FPS, T = 32000, 50, 500


@pytest.fixture(scope="module")
def pipe(tiny_engines):
    from jasco_runtime import JascoPipeline

    return JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"])


def _plan(duration, overlap=None):
    return plan_windows(duration, overlap, T, FPS, 640, SR, max_duration=60.0)


def _drums(seconds: float, seed: int = 0) -> np.ndarray:
    """A 32-kHz mono stem: noise bursts on an 8th-note grid (no resampling on the way in)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.exp(-np.arange(n) % 8000 / 800.0)
    return (0.5 * rng.standard_normal(n) * env).astype(np.float32)[None]


class Recorder:
    """Wraps an engine; keeps a copy of every call's inputs."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def __getattr__(self, name):  # max_batch, device, bind, close: the engine's
        return getattr(self.engine, name)

    def run(self, feeds):
        self.calls.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.engine.run(feeds)


# -- window plan ---------------------------------------------------------------------------------------
def test_window_plan_hops_by_window_minus_overlap_and_ends_with_the_song():
    plan = _plan(30.0)  # default overlap 2.5 s = 125 frames, hop 375 frames
    assert (plan.n_frames, plan.n_samples) == (1500, 30 * SR)
    assert [(w.start, w.end, w.known) for w in plan.windows] == [(0, 500, 0), (375, 875, 125), (750, 1250, 125),
                                                                 (1000, 1500, 250)]
    assert plan.seams == [500, 875, 1250]
    assert [(w.start, w.known) for w in _plan(30.0, 5.0).windows] == [(0, 0), (250, 250), (500, 250), (750, 250), (1000, 250)]
    assert [(w.start, w.known) for w in _plan(12.0).windows] == [(0, 0), (100, 400)]
    short = _plan(7.3)
    assert (short.n_windows, short.n_frames, short.n_samples) == (1, 365, 233600)
    assert _plan(10.0).n_windows == 1


@pytest.mark.parametrize("duration, overlap", [(30, 2.5), (30, 5), (12, 2.5), (60, 2.5), (25.3, 3.7), (59.99, 9.0),
                                               (10.02, 0.02), (47.5, 1)])
def test_runtime_and_reference_plan_the_same_windows(duration, overlap):
    from jasco_export.reference.longform import plan_song

    ours, ref = _plan(duration, overlap), plan_song(duration, overlap, T, FPS, 640, SR, 60.0)
    assert (ours.n_frames, ours.n_samples) == (ref.n_frames, ref.n_samples)
    assert [(w.start, w.known) for w in ours.windows] == list(zip(ref.starts, ref.known))
    assert ours.windows[-1].end == ours.n_frames and all(w.known >= round(overlap * FPS) for w in ours.windows[1:])


@pytest.mark.parametrize("duration, overlap, words", [
    (0, None, "duration must be > 0"), (-3, None, "duration must be > 0"),
    (60.0000001, None, "at most 60 s"), (float("nan"), None, "finite"),
    (float("inf"), None, "finite"), ("long", None, "duration must be a number"), (61, None, "at most 60 s"),
    (30, 10, "overlap must be between 0.02 s (one latent frame) and 9 s"), (30, -1, "overlap must be between"),
    (30, 0, "overlap must be between"),
    (30, 0.001, "overlap must be between"),  # O10: rounded to 0 frames, the windows had no continuation
    (30, 9.989, "less 1 s between window starts"),  # O11: 1001 windows
    (1e-6, None, "at least one latent frame (0.02 s)"),  # D10: a 0-sample wav
    (30, float("nan"), "finite"),
])
def test_bad_duration_or_overlap_is_a_one_line_input_error(pipe, duration, overlap, words):
    """One rule for duration and overlap (the window plan), sweep cases D09/D10, O01/O03, O10, O11."""
    with pytest.raises(InputError) as err:
        pipe.generate(["funk"], duration=duration, overlap=overlap, steps=1, progress=False)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_melody_window_is_the_salience_slice_under_it():
    mel = np.random.default_rng(0).random((53, 1400)).astype(np.float32)  # 28 s of salience
    plan = _plan(30.0)
    np.testing.assert_array_equal(window_melody(mel, plan.windows[2]), mel[:, 750:1250])
    np.testing.assert_array_equal(window_melody(mel, plan.windows[3]), mel[:, 1000:1400])  # short: padded later


# -- the 10-s path and the long path -------------------------------------------------------------------
def test_ten_seconds_is_exactly_the_single_window_generation(pipe):
    kw = dict(chords="C:0 F:4 G:8", steps=2, seed=3, progress=False, **CFG)
    ref = pipe.generate(["funk", "piano"], **kw)
    for extra in ({"duration": 10}, {"duration": 10.0, "overlap": 4.0}):
        res = pipe.generate(["funk", "piano"], **kw, **extra)
        assert np.array_equal(res.audio, ref.audio) and np.array_equal(res.latents, ref.latents) and res.nfe == ref.nfe
    short = pipe.generate(["funk", "piano"], **kw, duration=7.3)
    assert np.array_equal(short.audio, ref.audio[..., :233600]) and np.array_equal(short.latents, ref.latents[:, :365])


def test_thirty_seconds_is_stitched_from_windows_whose_overlaps_agree(pipe):
    kw = dict(chords="C:0 F:4 G:12 Am:25", drums=_drums(30.0), drums_sample_rate=SR, steps=3, duration=30,
              progress=False, **CFG)
    res = pipe.generate(["funk"], seed=1, **kw)
    assert np.array_equal(pipe.generate(["funk"], seed=1, **kw).audio, res.audio)  # deterministic with the seed
    assert res.audio.shape == (1, 1, 30 * SR) and np.isfinite(res.audio).all() and np.abs(res.audio).max() > 0
    assert res.latents.shape == (1, 1500, 128) and len(res.windows) == 4 and res.nfe == 4 * 3
    for prev, cur in zip(res.windows, res.windows[1:]):
        w = cur.window
        overlap_in_prev = prev.latents[:, w.start - prev.window.start:]
        assert overlap_in_prev.shape[1] == w.known
        assert np.abs(cur.latents[:, :w.known] - overlap_in_prev).max() <= 1e-6
    for r in res.windows:  # the song holds each window's new frames (the overlap comes from the earlier window)
        w = r.window
        np.testing.assert_array_equal(res.latents[:, w.start + w.known:w.end], r.latents[:, w.known:])
    np.testing.assert_array_equal(res.latents[:, :500], res.windows[0].latents)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "dopri5"])
def test_the_solver_state_moves_along_the_flow_path_on_the_overlap(solver):
    """With a toy field that mixes frames, the state each solver hands to the field (before any
    replacement) holds the path on the known frames: the constraint acts on the state itself."""
    from jasco_runtime.longform import Continuation
    from jasco_runtime.solvers import SolverSettings, solve as solve_with

    def solve(f, z, name, steps, rtol, atol):
        settings = SolverSettings(name, rtol=rtol, atol=atol) if name == "dopri5" else SolverSettings(name, steps)
        return solve_with(settings, f, z)

    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((2, 20, 4)).astype(np.float32)
    known = rng.standard_normal((2, 6, 4)).astype(np.float32) * 3
    states = []

    def field(t, z):
        return (np.roll(z, 1, axis=1) - z + np.sin(3 * t)).astype(np.float32)

    def recording(t, z):
        states.append((float(t), np.array(z, copy=True)))
        return constrained(t, z)

    c = Continuation(known, z0[:, :6])
    constrained = c.wrap(field)
    res = solve(recording, z0, solver, 7, 1e-4, 1e-4)
    assert len(states) == res.nfe >= 7
    for t, z in states:
        np.testing.assert_allclose(z[:, :6], (1 - (1 - 1e-5) * t) * z0[:, :6].astype(np.float64) + t * known,
                                   atol=1e-5, rtol=1e-5)
    assert np.abs(c.finish(res.z)[:, :6] - known).max() == 0
    free = solve(field, z0, solver, 7, 1e-4, 1e-4).z
    assert np.abs(res.z[:, 6:] - free[:, 6:]).max() > 1e-3  # the known frames steer the others


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "dopri5"])
def test_every_evaluation_sees_the_flow_path_on_the_overlap(pipe, solver):
    """Continuation: each vector-field call of window k+1 gets, on its overlap frames, (1 − (1 − 1e-5)·t)·z₀
    + t·z₁ with z₀ the window's initial noise and z₁ window k's latents (audiocraft solvers/jasco.py _z)."""
    calls = []
    field_of = pipe.core.guided_field
    windows = []

    @contextlib.contextmanager
    def spy(members):
        k = len(windows)
        windows.append(k)
        with field_of(members) as f:
            yield lambda t, z: (calls.append((k, float(t), np.array(z, copy=True))), f(t, z))[1]

    pipe.core.guided_field = spy
    try:
        noise = np.random.default_rng(4).standard_normal((1, 700, 128)).astype(np.float32)
        settings = dict(rtol=1e-2, atol=1e-2) if solver == "dopri5" else dict(steps=3)
        res = pipe.generate(["funk"], chords="C:0 G:9", solver=solver, init_noise=noise, duration=14, overlap=3,
                            progress=False, **settings, **CFG)
    finally:
        del pipe.core.guided_field
    (w0, w1), second = res.windows, [(t, z) for k, t, z in calls if k == 1]
    assert (w1.window.start, w1.window.known) == (200, 300) and len(second) == w1.nfe > 0
    z1 = w0.latents[:, 200:].astype(np.float64)
    z0 = noise[:, 200:500].astype(np.float64)
    for t, z in second:
        np.testing.assert_allclose(z[:, :300], (1 - (1 - 1e-5) * t) * z0 + t * z1, atol=1e-6, rtol=1e-6)
    assert min(t for t, _ in second) == 0.0 and max(t for t, _ in second) > 0.6
    assert np.abs(second[-1][1][:, 300:] - noise[:, 500:]).max() > 0.1  # the free frames moved


def test_chords_follow_the_song_timeline_across_windows(pipe, monkeypatch):
    seen = []
    encode = pipe.core.encode
    monkeypatch.setattr(pipe.core, "encode", lambda w, *a: (seen.append(w.chords), encode(w, *a))[1])
    pipe.generate(["funk"], chords=[("C", 0.0), ("G", 6.0), ("Am", 20.0), ("F", 25.0)], steps=1, seed=0, duration=30,
                  progress=False, **CFG)
    idx = pipe.chords_mapping
    assert len(seen) == 4  # windows start at 0, 7.5, 15 and 20 s
    assert seen[1][0] == idx["G"]  # G (from 6 s) held across the 7.5-s window start: frame 0, not "N"
    assert seen[2][0] == idx["G"] and seen[2][249] == idx["G"] and seen[2][250] == idx["Am"]  # Am at 20 s
    assert seen[3][0] == idx["Am"]
    assert seen[3][249] == idx["Am"] and (seen[3][250:] == idx["F"]).all()  # 25.0 s = frame 250 of the last window
    assert idx["F"] not in seen[2] and idx["F"] not in seen[0]


def test_drum_stem_slices_condition_each_window(pipe, monkeypatch):
    rec = Recorder(pipe.engines["drums_encoder"])
    monkeypatch.setitem(pipe.engines, "drums_encoder", rec)
    stem = _drums(30.0)
    pipe.generate(["funk"], drums=stem, drums_sample_rate=SR, steps=1, seed=0, duration=30, progress=False, **CFG)
    wavs = [c["wav"].reshape(-1) for c in rec.calls]
    assert len(wavs) == 4
    np.testing.assert_array_equal(wavs[3], stem[0, 20 * SR:30 * SR])  # samples 20–30 s → the last window
    np.testing.assert_array_equal(wavs[1], stem[0, 375 * 640:875 * 640])
    rec.calls.clear()
    pipe.generate(["funk"], drums=stem[:, :25 * SR], drums_sample_rate=SR, steps=1, seed=0, duration=30, progress=False, **CFG)
    last = rec.calls[3]["wav"].reshape(-1)  # a stem shorter than the song is zero-padded
    np.testing.assert_array_equal(last[:5 * SR], stem[0, 20 * SR:25 * SR])
    assert not last[5 * SR:].any()


def test_one_prompt_list_per_window(pipe, monkeypatch):
    seen = []
    encode = pipe.core.encode
    monkeypatch.setattr(pipe.core, "encode", lambda w, *a: (seen.append(list(w.prompts)), encode(w, *a))[1])
    prompts = [["intro"], ["verse"], ["chorus"], ["outro"]]
    pipe.generate(["ignored"], steps=1, seed=0, duration=30, window_descriptions=prompts, progress=False, **CFG)
    assert seen == prompts
    with pytest.raises(InputError, match="makes 4 windows"):
        pipe.generate(["x"], steps=1, duration=30, window_descriptions=prompts[:3], progress=False)


# -- seams -------------------------------------------------------------------------------------------------
def test_seam_metric_sees_a_jump():
    from benchmarks.long_songs import seam_metrics

    plan = _plan(30.0)
    t = np.arange(1500)[None, :, None] / 50.0
    smooth = np.sin(2 * np.pi * 0.5 * t + np.arange(128)[None, None, :]).astype(np.float32)
    assert np.allclose(seam_metrics(smooth, None, plan)["latent_jump"], 1.0, atol=0.2)
    jumped = smooth.copy()
    jumped[:, 875:] *= -1
    ratios = seam_metrics(jumped, None, plan)["latent_jump"]
    assert ratios[1] > 10 and abs(ratios[0] - 1) < 0.2


def test_continuation_reduces_the_seam_jump_of_a_model_with_temporal_structure(pipe):
    """Random tiny weights have no temporal structure (their seam ratios are ≈ 1 either way, reported
    here); the exact flow of smooth Gaussian data has, and the constraint must shrink its seams."""
    from benchmarks.long_songs import GaussianFlow, seam_metrics, vector_field_replaced
    from jasco_runtime.longform import generate_song
    from jasco_runtime.request import GenerationRequest

    plan = pipe.window_plan(30.0)
    jumps = {}
    for model in ("tiny", "gaussian"):
        req = GenerationRequest(["funk"], solver="euler", steps=10 if model == "gaussian" else 3, seed=0, duration=30,
                                **CFG).resolved(pipe.manifest.defaults)
        for continuation in (True, False):
            with vector_field_replaced(pipe, GaussianFlow(500)) if model == "gaussian" else contextlib.nullcontext():
                res = generate_song(pipe.core, pipe.prepare(req), progress=False, continuation=continuation)
            jumps[model, continuation] = float(np.mean(seam_metrics(res.latents, None, plan)["latent_jump"]))
    print("seam latent-jump ratio (with / without continuation):", jumps)
    assert jumps["gaussian", True] < 0.6 * jumps["gaussian", False]


# -- decoder, reference, CLI ------------------------------------------------------------------------------
def test_decoder_graph_takes_any_length_up_to_the_maximum(tiny_engines, tiny_cd):
    import onnxruntime as ort

    from jasco_export.graphs.spec import declare_graphs

    assert tiny_engines.folder.max_duration == 60.0  # recorded by the export, read from the manifest only
    profile = tiny_engines.manifest["graphs"]["encodec_decoder"]["profile"]["frames"]
    assert profile == {"min": 500, "opt": 500, "max": 3000}
    module = declare_graphs(tiny_cd)["encodec_decoder"].module
    sess = ort.InferenceSession(str(tiny_engines.out / "encodec_decoder.fp32.onnx"), providers=["CPUExecutionProvider"])
    for frames in (500, 1500):
        x = torch.randn(1, frames, 128, generator=torch.Generator().manual_seed(frames)) * 0.8
        with torch.no_grad():
            ref = module(x).numpy()
        got = sess.run(None, {"latents": x.numpy()})[0]
        assert got.shape == (1, 1, frames * 640) and np.abs(got - ref).max() <= 1e-4


def test_25_s_euler_matches_the_pytorch_reference(pipe, tiny_cd):
    from jasco_export.reference.longform import generate_song

    chords = [("C", 0.0), ("F", 4.0), ("G", 9.0), ("Am", 16.5), ("F", 25.0)]
    stem = _drums(21.0)
    noise = np.random.default_rng(5).standard_normal((1, 1250, 128)).astype(np.float32)
    tiny_cd.set_generation_params(euler=True, euler_steps=4, **CFG)
    ref = generate_song(tiny_cd, ["funk"], 25.0, drums_wav=torch.from_numpy(stem), drums_sample_rate=SR, chords=chords,
                        init_noise=torch.from_numpy(noise))
    res = pipe.generate(["funk"], chords=chords, drums=stem, drums_sample_rate=SR, solver="euler", steps=4,
                        init_noise=noise, duration=25, progress=False, **CFG)
    assert res.nfe == ref.nfe == 3 * 4 and res.audio.shape == tuple(ref.audio.shape) == (1, 1, 25 * SR)
    assert np.abs(res.latents - ref.latents.numpy()).max() <= 1e-4
    assert np.abs(res.audio - ref.audio.numpy()).max() <= 1e-4


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; sys.modules['torch'] = None; from jasco_runtime.cli import main; raise SystemExit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_duration(tiny_engines, tmp_path):
    import soundfile as sf

    out = tmp_path / "song.wav"
    r = _cli("--engines", str(tiny_engines.out), "--text", "funk", "--chords", "C:0 F:12 G:24", "--steps", "1",
             "--seed", "0", "--duration", "30", "--overlap", "5", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sf.info(str(out)).frames == 30 * SR
    for extra, words in ((["--duration", "90"], "at most 60 s"), (["--duration", "30", "--overlap", "12"], "overlap")):
        bad = tmp_path / "bad.wav"
        r = _cli("--engines", str(tiny_engines.out), "--text", "funk", "--steps", "1", "--out", str(bad), *extra)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not bad.exists()
