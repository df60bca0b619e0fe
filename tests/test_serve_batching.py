"""jasco_runtime.batching: requests that share one ODE solve get what they would get alone."""
from __future__ import annotations

import numpy as np
import pytest

from jasco_runtime.batching import batch_key, generate_batch, group_requests
from jasco_runtime.request import GenerationRequest

SR = 32000


def _drums(seed: int, seconds: float = 6.0) -> np.ndarray:
    """A synthetic drum stem: decaying noise bursts on a beat grid (mono, 32 kHz)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    wav = np.zeros(n, np.float32)
    hit = (rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)).astype(np.float32)
    for start in range(0, n - 2000, int(SR * (0.25 + 0.05 * seed))):
        wav[start:start + 2000] += hit
    return wav[None]


@pytest.fixture(scope="module")
def pipe(tiny_engines):
    from jasco_runtime import JascoPipeline

    return JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"])


class _RowCounter:
    """Wraps the flow-step engine and records how many rows each call gets."""

    def __init__(self, engine):
        self.engine, self.rows = engine, []
        self.max_batch, self.device, self.traffic = engine.max_batch, engine.device, engine.traffic
        self.whole_inputs = engine.whole_inputs

    def run(self, feeds):
        self.rows.append(feeds["z"].shape[0])
        return self.engine.run(feeds)

    def bind(self, arrays):
        return self.engine.bind(arrays)


def _req(pipe, **kw) -> GenerationRequest:
    kw.setdefault("solver", "euler")
    kw.setdefault("steps", 3)
    return GenerationRequest(**kw).resolved(pipe.manifest.defaults)


def _alone(pipe, req: GenerationRequest):
    return pipe.generate(req.prompts, chords=req.chords, drums=req.drums, drums_sample_rate=req.drums_sample_rate,
                         cfg_coef_all=req.cfg_coef_all, cfg_coef_txt=req.cfg_coef_txt, solver=req.solver,
                         steps=req.steps, rtol=req.rtol, atol=req.atol, seed=req.seed, progress=False)


def test_batched_requests_equal_their_solo_runs(pipe, monkeypatch):
    reqs = [
        # one shared solve: same solver/steps, 3 CFG terms, chords + drums given, 6 T5 tokens — different
        # weights, progressions, drum stems, seeds and prompt counts
        _req(pipe, prompts=["funky bass groove"], chords=[("C", 0.0), ("F", 2.5)], drums=_drums(1),
             drums_sample_rate=SR, cfg_coef_all=1.25, cfg_coef_txt=2.5, seed=11),
        _req(pipe, prompts=["upbeat funk groove", "hard rock"], chords=[("Am", 0.0), ("G", 4.0), ("E7", 7.0)],
             drums=_drums(2), drums_sample_rate=SR, cfg_coef_all=3.0, cfg_coef_txt=0.5, seed=12),
        _req(pipe, prompts=["hard rock"], chords=[("E", 0.0)], drums=_drums(3, 12.0), drums_sample_rate=SR,
             cfg_coef_all=2.0, cfg_coef_txt=1.0, seed=13),
        # other keys: another token count (8); no drums; 2 CFG terms (txt = 0); 4 steps; dopri5 runs alone
        _req(pipe, prompts=["slow ambient pad"], chords=[("C", 0.0)], drums=_drums(6), drums_sample_rate=SR,
             cfg_coef_all=1.25, cfg_coef_txt=2.5, seed=18),
        _req(pipe, prompts=["jazz trio"], chords=[("Dm7", 0.0), ("G7", 2.0)], cfg_coef_all=1.25, cfg_coef_txt=2.5, seed=14),
        _req(pipe, prompts=["drum and bass"], chords=[("C", 0.0)], drums=_drums(4), drums_sample_rate=SR,
             cfg_coef_all=5.0, cfg_coef_txt=0.0, seed=15),
        _req(pipe, prompts=["folk song"], chords=[("G", 0.0)], drums=_drums(5), drums_sample_rate=SR,
             cfg_coef_all=1.5, cfg_coef_txt=1.5, steps=4, seed=16),
        _req(pipe, prompts=["techno"], solver="dopri5", steps=None, rtol=1e-2, atol=1e-2, seed=17),
    ]
    groups = group_requests(pipe, reqs)
    assert groups == [[0, 1, 2], [3], [4], [5], [6], [7]]
    counter = _RowCounter(pipe.engines["flow_step"])
    monkeypatch.setitem(pipe.engines, "flow_step", counter)
    outcomes = generate_batch(pipe, reqs)
    # the shared solve really mixes requests: 4 prompts × 3 CFG terms = 12 rows per evaluation (alone: 3
    # or 6), chunked to the profile's 6 rows, so each engine call holds rows of several requests
    assert counter.rows[:6] == [6] * 6
    monkeypatch.setitem(pipe.engines, "flow_step", counter.engine)
    assert [o.timings["batch_prompts"] for o in outcomes] == [4, 4, 4, 1, 1, 1, 1, 1]
    for req, got in zip(reqs, outcomes):
        ref = _alone(pipe, req)
        assert got.nfe == ref.nfe
        assert got.audio.shape == ref.audio.shape == (len(req.prompts), 1, pipe.manifest.segment_samples)
        assert np.abs(got.latents - ref.latents).max() <= 1e-5, req.prompts
        assert np.abs(got.audio - ref.audio).max() <= 1e-5, req.prompts
    # and the requests did not collapse onto each other
    assert np.abs(outcomes[0].audio[0] - outcomes[2].audio[0]).max() > 1e-3


def test_a_bad_request_fails_alone(pipe):
    good = _req(pipe, prompts=["calm piano"], chords=[("C", 0.0)], seed=1)
    bad = _req(pipe, prompts=["too long " * 200], chords=[("F", 0.0)], seed=2)  # past the text profile
    outcomes = generate_batch(pipe, [good, bad])
    assert not isinstance(outcomes[0], Exception)
    assert "T5 tokens long" in str(outcomes[1])
    assert np.abs(outcomes[0].audio - _alone(pipe, good).audio).max() <= 1e-5


def test_group_limits(pipe):
    reqs = [_req(pipe, prompts=["a", "b"], seed=i) for i in range(3)]
    assert group_requests(pipe, reqs, max_prompts=4) == [[0, 1], [2]]
    longer = _req(pipe, prompts=["a"], duration=2 * pipe.manifest.duration)
    assert batch_key(pipe.prepare(longer)) is None and batch_key(pipe.prepare(reqs[0])) is not None
