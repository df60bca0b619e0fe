"""The generation core (jasco_runtime.generation): one owner of a solve, planners with no private calls, device
buffers released on every path, the engine interface complete, and what ran reported from one resolution.

The TensorRT tests run on the strict stand-in (tests/standins/tensorrt.py): they check I/O plumbing and device
allocations, not TensorRT numerics."""
from __future__ import annotations

import ast
import shutil
import typing as tp
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

RUNTIME = ROOT / "runtime" / "jasco_runtime"
CFG = dict(cfg_coef_all=1.25, cfg_coef_txt=2.5, solver="euler")


# -- structure ------------------------------------------------------------------------------------------------
def _module_imports(path: Path) -> tp.Set[str]:
    """Modules of jasco_runtime a module imports, at module level or inside functions (a deferred import is
    still a cycle); TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(RUNTIME.parent).with_suffix("").parts
    pkg = pkg[:-1] if pkg[-1] != "__init__" else pkg[:-1]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
                   for n in ast.walk(node)}
    out: tp.Set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[:len(pkg) - node.level + 1])
            if node.module:
                out.add(".".join(base + node.module.split(".")))
            else:
                out.update(".".join(base + [a.name]) for a in node.names)
    return out


def test_no_import_cycle_in_the_runtime():
    """Issue 16: pipeline ↔ longform was the runtime's one cycle; none is left (module-level imports)."""
    modules = {".".join(p.relative_to(RUNTIME.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in RUNTIME.rglob("*.py")}
    graph = {m: {i for i in _module_imports(p) if i in modules} for m, p in modules.items()}
    state: tp.Dict[str, int] = {}

    def visit(m: str, stack: tp.List[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " → ".join(stack[stack.index(n):] + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert "jasco_runtime.longform" in graph["jasco_runtime.pipeline"]  # the parser sees the planner's imports


@pytest.mark.parametrize("planner", ["longform.py", "batching.py", "pipeline.py"])
def test_planners_use_no_private_member_and_no_solver(planner):
    """longform and batching plan over the solve owner: no ``pipe._x``/``core._x``, no solver or tqdm of their own."""
    tree = ast.parse((RUNTIME / planner).read_text())
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and not n.attr.startswith("__") and isinstance(n.value, ast.Name) and n.value.id not in ("self", "cls")]
    assert private == []
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"SOLVERS", "dopri5", "tqdm", "default_rng"}, names & {"SOLVERS", "dopri5", "tqdm", "default_rng"}


def test_every_backend_implements_the_whole_engine_interface():
    import inspect

    from jasco_runtime.backends.base import Engine
    from jasco_runtime.backends.onnxruntime_backend import OnnxRuntimeEngine
    from jasco_runtime.backends.tensorrt_backend import TensorRTEngine

    for cls in (OnnxRuntimeEngine, TensorRTEngine):
        assert issubclass(cls, Engine) and not inspect.isabstract(cls), cls
    assert {"run", "bind", "close"} <= Engine.__abstractmethods__


def test_solvers_share_one_signature():
    from jasco_runtime.solvers import SolverSettings, solve

    z0 = np.ones((1, 3, 2), np.float32)
    for settings in (SolverSettings("euler", 4), SolverSettings("midpoint", 8), SolverSettings("heun", 8),
                     SolverSettings("dopri5", rtol=1e-5, atol=1e-5)):
        res = solve(settings, lambda t, z: -z, z0)  # dz/dt = −z: z(1) = e^-1
        np.testing.assert_allclose(res.z, np.exp(-1) * z0, rtol=0.3 if settings.solver == "euler" else 1e-2)
        if settings.fixed_step:
            assert res.nfe == settings.expected_nfe


# -- chunking: count the engine calls --------------------------------------------------------------------------
class _Counting:
    """Wraps an engine, records the rows of every call (the engine interface is delegated as it is)."""

    def __init__(self, engine, max_batch):
        self.engine, self.max_batch, self.rows = engine, max_batch, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, feeds):
        self.rows.append(int(next(iter(feeds.values())).shape[0]))
        return self.engine.run(feeds)

    def bind(self, arrays):
        return self.engine.bind(arrays)

    def run_device(self, inputs, outputs, workspace):
        self.rows.append(int(next(iter(inputs.values())).shape[0]))
        return self.engine.run_device(inputs, outputs, workspace)


def test_chunking_follows_the_engines_own_profile(tiny_engines):
    """Issue 16 (replaces the chunking test that passed with chunking disabled): with an engine profile of 2
    rows, 2 prompts × 3 CFG terms call the flow step in chunks of 2 and give the unchunked result."""
    from jasco_runtime import JascoPipeline

    noise = np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32)
    kw = dict(chords="C:0 F:4", steps=2, init_noise=noise, progress=False, **CFG)
    pipe = JascoPipeline.from_dir(tiny_engines.out)
    ref = pipe.generate(["a", "bb"], **kw)
    counting = _Counting(pipe.engines["flow_step"], max_batch=2)
    pipe.engines["flow_step"] = counting
    got = pipe.generate(["a", "bb"], **kw)
    assert counting.rows == [2, 2, 2] * 2  # 6 rows in chunks of 2, per evaluation
    np.testing.assert_array_equal(got.latents, ref.latents)


# -- device allocations on every path (TensorRT stand-in) ------------------------------------------------------
@pytest.fixture()
def trt_pipe(tiny_engines, tmp_path, trt_standin):
    from jasco_runtime import JascoPipeline

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engines.out, folder)
    trt_standin.build_engines(folder)
    pipe = JascoPipeline.from_dir(folder, backend="tensorrt")
    yield pipe
    pipe.close()


def _resolved(pipe, prompts, **kw):
    from jasco_runtime.request import GenerationRequest

    return GenerationRequest(prompts, **{**CFG, "steps": 1, **kw}).resolved(pipe.manifest.defaults)


def test_batched_solves_leave_the_device_allocations_where_they_were(trt_pipe, trt_standin):
    """Issue 16 §2: 5 batched solves of 3 requests used to take the live allocations from 14 to 44."""
    from jasco_runtime.batching import generate_batch

    trt_pipe.generate(["warm"], steps=1, progress=False, **CFG)
    before = trt_standin.snapshot()
    for k in range(5):
        reqs = [_resolved(trt_pipe, [f"req {k}.{i}"], seed=i, chords="C:0 F:4") for i in range(3)]
        outcomes = generate_batch(trt_pipe, reqs)
        assert all(o.timings["batch_prompts"] == 3 for o in outcomes), outcomes
        assert trt_standin.snapshot() == before, f"batched solve {k} left device allocations"


def test_long_songs_leave_the_device_allocations_where_they_were(trt_pipe, trt_standin):
    """Issue 16 §2: three 30-s songs used to take the live allocations from 14 to 50."""
    trt_pipe.generate(["warm"], steps=1, progress=False, **CFG)
    before = trt_standin.snapshot()
    for k in range(3):
        res = trt_pipe.generate([f"song {k}"], duration=30, steps=1, seed=k, progress=False, **CFG)
        assert len(res.windows) == 4
        assert trt_standin.snapshot() == before, f"song {k} left device allocations"


def test_a_failed_or_cancelled_solve_frees_its_buffers(trt_pipe, trt_standin):
    from jasco_runtime.generation import Cancelled

    trt_pipe.generate(["warm"], steps=1, progress=False, **CFG)
    before = trt_standin.snapshot()
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        trt_pipe.generate(["x"], steps=10, progress=False, cancel=cancel, **CFG)
    assert len(calls) == 3 and trt_standin.snapshot() == before
    with pytest.raises(Cancelled):
        trt_pipe.generate(["x"], duration=30, steps=10, progress=False, cancel=lambda: True, **CFG)
    assert trt_standin.snapshot() == before


@pytest.mark.parametrize("loop", ["device", "host"])
def test_an_engine_failing_mid_solve_frees_the_solves_buffers(trt_pipe, trt_standin, loop):
    """The third flow-step call fails: the device loop's workspace (state, rows, schedules) and the host loop's
    bound conditions are freed all the same."""
    trt_pipe.core.device_loop = loop == "device"
    trt_pipe.generate(["warm"], steps=1, progress=False, **CFG)
    before = trt_standin.snapshot()
    flow = trt_pipe.engines["flow_step"]
    method = "run_device" if loop == "device" else "run"
    real_run, calls = getattr(flow, method), []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("TensorRT execution of flow_step failed")
        return real_run(*args)

    setattr(flow, method, failing)
    try:
        with pytest.raises(RuntimeError, match="execution of flow_step failed"):
            trt_pipe.generate(["x"], steps=5, progress=False, **CFG)
    finally:
        delattr(flow, method)
    assert len(calls) == 3 and trt_standin.snapshot() == before


def test_a_prepared_request_pickles_its_stem_once(tiny_engines):
    """A server ships the prepared request to a replica: a 60-s song's 51 window slices travel as one stem."""
    import pickle

    from jasco_runtime.conditioning import ConditionProvider
    from jasco_runtime.export_folder import ExportFolder
    from jasco_runtime.request import GenerationRequest

    provider = ConditionProvider(ExportFolder.open(tiny_engines.out))
    stem = np.random.default_rng(0).standard_normal((1, 60 * 32000)).astype(np.float32)
    req = GenerationRequest(["x"], drums=stem, drums_sample_rate=32000, duration=60, overlap=9, steps=1)
    prepared = provider.prepare(req.resolved(provider.folder.defaults))
    data = pickle.dumps(prepared)
    assert len(prepared.windows) == 51 and len(data) < 1.2 * stem.nbytes
    back = pickle.loads(data)
    for a, b in zip(prepared.windows, back.windows):
        np.testing.assert_array_equal(a.drums, b.drums)
    assert back.request.drums is None and back.request.steps == 1


def test_a_clip_just_shorter_than_the_window_is_trimmed(tiny_engines):
    """9.99 s is 500 latent frames but 319 680 samples: the clip has 319 680 samples, not a whole window."""
    from jasco_runtime import JascoPipeline

    res = JascoPipeline.from_dir(tiny_engines.out).generate(["x"], duration=9.99, steps=1, seed=0, progress=False,
                                                            **CFG)
    assert res.audio.shape == (1, 1, 319680)


def _device_counters(standin) -> tp.Dict[str, int]:
    gpu = standin.gpu
    return {"h2d": gpu.traffic["h2d_bytes"], "d2h": gpu.traffic["d2h_bytes"], "d2d": gpu.traffic["d2d_bytes"],
            "mallocs": gpu.mallocs, "frees": gpu.frees}


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun"])
def test_a_fixed_step_solve_moves_nothing_between_host_and_device_per_evaluation(trt_pipe, trt_standin, solver):
    """Issue 16 §5: on the TensorRT stand-in, between two evaluations (``cancel`` is asked before each) the device
    saw no copy in any direction and no allocation or free — counted by the stand-in's CUDA, not by the project —
    while both engines ran, and nothing was still queued (progress and cancellation follow finished work); the
    latents equal the host loop's on the same engines.  The host loop sends z and t in
    and v out at every evaluation (the old design), which this test measures too."""
    kw = dict(steps=3, seed=0, progress=False, chords="C:0 F:4", **{**CFG, "solver": solver})
    per_eval = {}
    for loop in ("device", "host"):
        trt_pipe.core.device_loop = loop == "device"
        seen, queued = [], []

        def cancel() -> bool:
            seen.append((_device_counters(trt_standin), trt_standin.executions))
            queued.append(sum(len(ops) for ops in trt_standin.gpu.streams.values()))
            return False

        res = trt_pipe.generate(["a", "b"], cancel=cancel, **kw)
        assert res.ode_loop == loop and len(seen) == res.nfe == (3 if solver == "euler" else 6)
        per_eval[loop] = [({k: b[0][k] - a[0][k] for k in a[0]}, b[1] - a[1]) for a, b in zip(seen, seen[1:])]
        per_eval[loop + "_latents"] = res.latents
        assert queued[1:] == [0] * (len(queued) - 1), queued  # each evaluation done before the next is asked for
        per_eval[loop + "_traffic"] = res.traffic
    rows, T, D = 2 * 3, 500, 128  # 2 prompts × 3 CFG terms
    nothing = {"h2d": 0, "d2h": 0, "d2d": 0, "mallocs": 0, "frees": 0}
    assert all(c == nothing and runs == 2 for c, runs in per_eval["device"]), per_eval["device"]  # flow + solver step
    assert all(c["h2d"] == rows * T * D * 4 + rows * 4 and c["d2h"] == rows * T * D * 4 and c["mallocs"] == 0
               for c, _ in per_eval["host"]), per_eval["host"]
    assert per_eval["device_traffic"]["h2d_bytes_per_nfe"] == per_eval["device_traffic"]["allocations_per_nfe"] == 0
    assert per_eval["device_traffic"]["d2h_bytes_per_nfe"] == 0
    assert per_eval["device_traffic"]["d2h_bytes_per_solve"] == 2 * T * D * 4  # the final state, once
    assert per_eval["host_traffic"]["h2d_bytes_per_nfe"] == rows * T * D * 4 + rows * 4
    np.testing.assert_allclose(per_eval["device_latents"], per_eval["host_latents"], rtol=0, atol=1e-6)


def test_dopri5_on_the_device_copies_only_its_step_plan_and_error_norm(trt_pipe, trt_standin):
    """Issue 16 §5 (dopri5: its error norm only): on the TensorRT stand-in, between the six evaluations of an attempted
    step nothing is copied or allocated; between two steps the device sees exactly one upload of the step's plan
    (coefficients and stage times: 13 rows of 256 bytes) and one download of its error norm (one 256-byte row per
    prompt chunk), counted by the stand-in's CUDA; nothing is allocated or freed per step.  Same NFE as the host
    loop, the state close to it (the error norm is summed in another order than torch's)."""
    kw = dict(seed=0, progress=False, chords="C:0 F:4", **{**CFG, "solver": "dopri5"})
    plan, norm = 13 * 64 * 4, 256
    trt_pipe.core.device_loop = True
    seen = []
    res = trt_pipe.generate(["a", "b"], cancel=lambda: seen.append(_device_counters(trt_standin)) or False, **kw)
    assert res.ode_loop == "device" and len(seen) == res.nfe and (res.nfe - 2) % 6 == 0
    deltas = [{k: b[k] - a[k] for k in a} for a, b in zip(seen, seen[1:])]
    step = {"h2d": plan, "d2h": norm, "d2d": 0, "mallocs": 0, "frees": 0}
    nothing = {"h2d": 0, "d2h": 0, "d2d": 0, "mallocs": 0, "frees": 0}
    # f(t0) | the probe | each attempt's 6 evaluations: a step boundary before the probe and before every attempt
    boundaries = {0} | set(range(1, res.nfe - 1, 6))
    assert [d == step for d in deltas] == [e in boundaries for e in range(len(deltas))], deltas
    assert all(d in (step, nothing) for d in deltas)
    per_solve = len(boundaries) + 1  # the plans and norms of the whole solve (the last norm after the last evaluation)
    assert res.traffic["h2d_bytes_per_nfe"] == pytest.approx(per_solve * plan / res.nfe)
    assert res.traffic["d2h_bytes_per_nfe"] == pytest.approx(per_solve * norm / res.nfe)
    assert res.traffic["allocations_per_nfe"] == 0
    trt_pipe.core.device_loop = False
    ref = trt_pipe.generate(["a", "b"], **kw)
    assert ref.ode_loop == "host" and ref.nfe == res.nfe
    assert ref.traffic["h2d_bytes_per_nfe"] > 100 * res.traffic["h2d_bytes_per_nfe"]
    # the stand-in runs the fp16 flow step: an ulp of step size shows at fp16 rounding (the CPU test: float32)
    np.testing.assert_allclose(res.latents, ref.latents, rtol=0, atol=5e-3)


@pytest.mark.parametrize("case", ["clip", "chunked", "song"])
def test_dopri5_on_the_device_is_the_host_solver_given_its_error_norm(tiny_engines, monkeypatch, case):
    """dopri5's device loop forced on ONNX Runtime CPU: with the error norm computed as the host solver computes it
    (torch's summation order, from the states the loop wrote) every stage input, step and the dense output give the
    host loop's latents bit for bit — a clip, a clip in chunks of the profiles, and a continued long song; with
    its own norm (summed in solver_step) the same NFE and the state within float32 rounding."""
    from jasco_runtime import JascoPipeline, device_solve, solvers
    from jasco_runtime.backends.base import host_view

    pipe = JascoPipeline.from_dir(tiny_engines.out)
    if case == "chunked":
        pipe.engines["flow_step"] = _Counting(pipe.engines["flow_step"], max_batch=4)
        pipe.engines["solver_step"] = _Counting(pipe.engines["solver_step"], max_batch=1)
    kw = dict(chords="C:0 F:4", seed=2, progress=False, solver="dopri5", cfg_coef_all=1.25, cfg_coef_txt=2.5,
              **({"duration": 25} if case == "song" else {}))
    pipe.core.device_loop = False
    ref = pipe.generate(["a", "bb"], **kw)
    pipe.core.device_loop = True
    own = pipe.generate(["a", "bb"], **kw)
    assert (ref.ode_loop, own.ode_loop, own.nfe) == ("host", "device", ref.nfe)
    np.testing.assert_allclose(own.latents, ref.latents, rtol=0, atol=1e-4)

    last = {}
    real_combine = device_solve._Loop.combine

    def combine(self, c, base, slots, v_out, z_out, ref=None):
        real_combine(self, c, base, slots, v_out, z_out, ref)
        last.update(z=z_out, ref=ref or (base, base))

    def host_norm(self):
        a, b = (host_view(x).copy() for x in last["ref"])
        return solvers.error_ratio(host_view(last["z"]).copy(), 1e-5, 1e-5, a, b)

    monkeypatch.setattr(device_solve._Loop, "combine", combine)
    monkeypatch.setattr(device_solve._Loop, "norm", host_norm)
    exact = pipe.generate(["a", "bb"], **kw)
    assert exact.ode_loop == "device" and exact.nfe == ref.nfe
    np.testing.assert_array_equal(exact.latents, ref.latents)
    if case == "song":
        assert len(exact.windows) == 3
        np.testing.assert_array_equal(exact.audio, ref.audio)


def test_the_device_loop_is_the_host_loop_on_the_cpu(tiny_engines):
    """The device loop forced on ONNX Runtime CPU (the same solver_step graph TensorRT runs) reproduces the numpy
    solver bit for bit for Euler, midpoint and Heun, with one and with three CFG terms, and in chunks."""
    from jasco_runtime import JascoPipeline

    pipe = JascoPipeline.from_dir(tiny_engines.out)
    noise = np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32)
    for solver, cfg in (("euler", (1.25, 2.5)), ("midpoint", (1.25, 2.5)), ("heun", (1.0, 0.0)), ("heun", (2.0, 0.0))):
        kw = dict(chords="C:0 F:4", steps=3, init_noise=noise, progress=False, cfg_coef_all=cfg[0],
                  cfg_coef_txt=cfg[1], solver=solver)
        pipe.core.device_loop = False
        ref = pipe.generate(["a", "bb"], **kw)
        pipe.core.device_loop = True
        got = pipe.generate(["a", "bb"], **kw)
        assert (ref.ode_loop, got.ode_loop) == ("host", "device")
        np.testing.assert_array_equal(got.latents, ref.latents, err_msg=f"{solver} {cfg}")
    flow = pipe.engines["flow_step"] = _Counting(pipe.engines["flow_step"], max_batch=3)
    step = pipe.engines["solver_step"] = _Counting(pipe.engines["solver_step"], max_batch=1)
    got = pipe.generate(["a", "bb"], **kw)
    np.testing.assert_array_equal(got.latents, ref.latents)
    assert flow.rows == [3, 1] * 6 and step.rows == [1, 1] * 6  # 2 × 2 rows in chunks of 3, 2 prompts one by one


def test_a_batched_device_solve_weighs_each_request_with_its_own_cfg(tiny_engines):
    """Two requests with different CFG coefficients (same terms) share one device solve (2 prompts × 3 terms: the
    flow step's 6-row profile): each prompt's rows get its own weights in solver_step, and every clip equals its
    host-loop result and its solo result."""
    from jasco_runtime import JascoPipeline
    from jasco_runtime.batching import generate_batch
    from jasco_runtime.request import GenerationRequest

    pipe = JascoPipeline.from_dir(tiny_engines.out)
    reqs = [GenerationRequest(["funk groove"], chords="C:0 F:4", solver="heun", steps=2, seed=i, cfg_coef_all=a,
                              cfg_coef_txt=b).resolved(pipe.manifest.defaults)
            for i, (a, b) in enumerate(((1.25, 2.5), (3.0, 0.5)))]
    got = {}
    for loop in (True, False):
        pipe.core.device_loop = loop
        outcomes = generate_batch(pipe, reqs)
        assert all(o.timings["batch_prompts"] == 2 and o.ode_loop == ("device" if loop else "host") for o in outcomes)
        got[loop] = [o.latents for o in outcomes]
    pipe.core.device_loop = True
    solo = [generate_batch(pipe, [r])[0].latents for r in reqs]
    for a, b, c in zip(got[True], got[False], solo):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-5)  # batched == solo (chunking may reorder BLAS sums)


def test_the_device_loop_continues_long_song_windows_as_the_host_loop_does(tiny_engines):
    """A 25-s song (3 windows, the later two continued over their overlap): the device loop (solver_step applies
    the continuation path and velocity) gives the host loop's song and audio bit for bit on the CPU."""
    from jasco_runtime import JascoPipeline

    pipe = JascoPipeline.from_dir(tiny_engines.out)
    for solver in ("euler", "heun"):
        kw = dict(chords="C:0 F:4", steps=2, seed=1, progress=False, duration=25, **{**CFG, "solver": solver})
        pipe.core.device_loop = False
        ref = pipe.generate(["a", "bb"], **kw)
        pipe.core.device_loop = True
        got = pipe.generate(["a", "bb"], **kw)
        assert (ref.ode_loop, got.ode_loop, len(got.windows)) == ("host", "device", 3)
        np.testing.assert_array_equal(got.latents, ref.latents, err_msg=solver)
        np.testing.assert_array_equal(got.audio, ref.audio, err_msg=solver)


def test_a_long_song_keeps_every_window_on_the_device(trt_pipe, trt_standin):
    """On the TensorRT stand-in a 30-s song's windows (continued ones included) move nothing per evaluation."""
    seen = []
    res = trt_pipe.generate(["a"], duration=30, steps=2, seed=0, progress=False,
                            cancel=lambda: seen.append(_device_counters(trt_standin)) or False, **CFG)
    assert res.ode_loop == "device" and len(res.windows) == 4 and len(seen) == 8
    for w in range(4):  # the two evaluations of each window: nothing between them
        a, b = seen[2 * w], seen[2 * w + 1]
        assert {k: b[k] - a[k] for k in a} == {"h2d": 0, "d2h": 0, "d2d": 0, "mallocs": 0, "frees": 0}, w
    assert res.traffic["h2d_bytes_per_nfe"] == res.traffic["d2h_bytes_per_nfe"] == 0


def test_onnxruntime_cuda_runs_the_device_loop_through_iobinding(tiny_engines, monkeypatch):
    """With the CUDA provider (aliased to the CPU: tests/standins/ort_cuda.py) the loop binds its OrtValues by
    address through IOBinding: the flow step's own counters see no copy per evaluation, and the clip is the host
    loop's on the same sessions.  Plumbing, not CUDA numerics."""
    from standins.ort_cuda import AliasedCuda

    from jasco_runtime import JascoPipeline

    AliasedCuda().install(monkeypatch)
    pipe = JascoPipeline.from_dir(tiny_engines.out, providers=["cuda"], precision="fp32")
    assert pipe.engines["flow_step"].device == "cuda"
    kw = dict(steps=2, seed=3, progress=False, chords="C:0 F:4", **{**CFG, "solver": "midpoint"})
    got = pipe.generate(["a", "b"], **kw)
    assert got.ode_loop == "device" and got.traffic["h2d_bytes_per_nfe"] == got.traffic["d2h_bytes_per_nfe"] == 0
    assert got.traffic["d2h_bytes_per_solve"] == 2 * 500 * 128 * 4
    pipe.core.device_loop = False
    ref = pipe.generate(["a", "b"], **kw)
    assert ref.ode_loop == "host" and ref.traffic["h2d_bytes_per_nfe"] > 0
    np.testing.assert_array_equal(got.latents, ref.latents)


def test_cancel_is_asked_between_evaluations(tiny_engines):
    """A cancelled generation stops at the next evaluation, without running the rest (issue 20 §2)."""
    from jasco_runtime import JascoPipeline
    from jasco_runtime.generation import Cancelled

    pipe = JascoPipeline.from_dir(tiny_engines.out)
    counting = _Counting(pipe.engines["flow_step"], max_batch=pipe.engines["flow_step"].max_batch)
    pipe.engines["flow_step"] = counting
    seen = []
    with pytest.raises(Cancelled):
        pipe.generate(["x"], steps=1000, progress=False, cancel=lambda: (seen.append(1), len(seen) > 4)[1], **CFG)
    assert len(counting.rows) == 4


# -- what ran is what is reported ------------------------------------------------------------------------------
def test_precision_and_providers_come_from_one_resolution(tiny_engines, monkeypatch):
    """Issue 16 §4: with no --provider on a box whose ONNX Runtime offers CUDA, the fp16 graphs are chosen and the
    report says what the session really runs (here: CUDA offered but not startable → CPU, reported as such)."""
    import onnxruntime as ort

    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends.onnxruntime_backend import CPU, CUDA

    cpu = JascoPipeline.from_dir(tiny_engines.out)
    assert cpu.resolution.to_dict() == {"backend": "onnxruntime", "precision": "fp32", "providers": [CPU],
                                        "device": "cpu"}
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", _ForcedSession)
    gpu = JascoPipeline.from_dir(tiny_engines.out)
    assert gpu.resolution.precision == "fp16"
    assert gpu.resolution.providers == (CUDA, CPU) and gpu.resolution.device == "cuda"
    assert _ForcedSession.opened["flow_step"].endswith("flow_step.fp16.onnx")


def test_cuda_that_does_not_start_runs_and_reports_the_fp32_cpu_graphs(tiny_engines, monkeypatch):
    """ONNX Runtime lists CUDA but its libraries do not load: the session falls back to the CPU.  The defaulted
    precision then follows what runs (fp32, reopened), and the report says CPU."""
    import onnxruntime as ort

    from jasco_runtime import JascoPipeline
    from jasco_runtime.backends.onnxruntime_backend import CPU, CUDA

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", _FallbackSession)
    _FallbackSession.opened.clear()
    pipe = JascoPipeline.from_dir(tiny_engines.out)
    assert pipe.resolution.to_dict() == {"backend": "onnxruntime", "precision": "fp32", "providers": [CPU],
                                         "device": "cpu"}
    assert [Path(p).name for p in _FallbackSession.opened if "flow_step" in p] == ["flow_step.fp16.onnx",
                                                                                   "flow_step.fp32.onnx"]


class _FallbackSession:
    """What onnxruntime-gpu does when CUDA cannot start: a CPU session, ``get_providers()`` without CUDA."""

    opened: tp.List[str] = []

    def __init__(self, path, sess_options=None, providers=None):
        import onnxruntime as ort

        real = ort.capi.onnxruntime_inference_collection.InferenceSession
        self._session = real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        _FallbackSession.opened.append(str(path))

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._session, name)


class _ForcedSession:
    """An InferenceSession that reports the providers it was asked for (what onnxruntime-gpu does when CUDA starts);
    it runs on the CPU underneath."""

    opened: tp.Dict[str, str] = {}
    _real = None

    def __init__(self, path, sess_options=None, providers=None):
        import onnxruntime as ort

        real = ort.capi.onnxruntime_inference_collection.InferenceSession
        self._session = real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self._providers = [p if isinstance(p, str) else p[0] for p in providers]
        _ForcedSession.opened[Path(path).name.split(".")[0]] = str(path)

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_cli_json_reports_the_resolution(tiny_engines, tmp_path, capfd):
    import json

    from jasco_runtime.cli import main

    code = main(["--engines", str(tiny_engines.out), "--text", "x", "--steps", "1", "--out", str(tmp_path / "o.wav"),
                 "--json", "--no-progress"])
    summary = json.loads(capfd.readouterr().out)
    assert code == 0
    assert (summary["backend"], summary["precision"], summary["providers"]) == \
        ("onnxruntime", "fp32", ["CPUExecutionProvider"])
    assert isinstance(summary["seed"], int)  # J01/J02: the drawn seed is reported
    assert summary["ode_loop"] == "host" and summary["traffic"]["h2d_bytes_per_nfe"] == 0  # the CPU: host memory


def test_the_device_loop_declines_what_the_engines_would_refuse_mid_solve():
    """More CFG terms than solver_step's profile, or a prompt state whose row views would not be 256-byte aligned
    (TensorRT's set_tensor_address rule), fall back to the host loop with the reason instead of failing mid-solve;
    an older two-derivative solver_step too."""
    from types import SimpleNamespace

    from jasco_runtime import stage_layout
    from jasco_runtime.device_solve import device_solver_available
    from jasco_runtime.solvers import SolverSettings

    flow = SimpleNamespace(device="cuda", input_names=["z", "t"], output_names=["v"])
    step = SimpleNamespace(device="cuda", input_names=["v_rows", "c", *stage_layout.SLOT_NAMES], output_names=["sq"])
    heun = SolverSettings("heun", steps=2)
    assert device_solver_available(flow, step, heun, terms=3, max_terms=3, frame_bytes=500 * 128 * 4) is None
    assert device_solver_available(flow, step, SolverSettings("dopri5"), terms=3, max_terms=3) is None
    assert "4 CFG terms" in device_solver_available(flow, step, heun, terms=4, max_terms=3)
    assert "multiple of 256" in device_solver_available(flow, step, heun, frame_bytes=500 * 100 * 4 + 4)
    old = SimpleNamespace(device="cuda", input_names=["v_rows", "k_prev", "c"], output_names=["v", "z", "z_rows"])
    assert "predates" in device_solver_available(flow, old, heun)
    assert "no solver_step" in device_solver_available(flow, None, heun)
