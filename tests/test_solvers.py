"""jasco_runtime.solvers: convergence orders, parity with the PyTorch reference loops, errors."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm

from jasco_runtime.solvers import SOLVERS, ODEResult, dopri5, euler, heun, midpoint

FIXED = {"euler": euler, "midpoint": midpoint, "heun": heun}
ORDER = {"euler": 1, "midpoint": 2, "heun": 2}
ROOT = Path(__file__).resolve().parents[1]

_rng = np.random.default_rng(1234)
_A = _rng.standard_normal((4, 4))
_A *= 1.5 / np.linalg.norm(_A, 2)
_Z0_LIN = _rng.standard_normal(4)

# (vector field, z0, exact z(1)) in float64; three are time-dependent so the stage times are exercised.
PROBLEMS = {
    "gaussian_decay": (lambda t, z: -2.0 * t * z, np.array([1.0, -0.5, 2.0]), np.array([1.0, -0.5, 2.0]) * math.exp(-1)),
    "linear_system": (lambda t, z: _A @ z, _Z0_LIN, expm(_A) @ _Z0_LIN),
    "time_scaled_linear": (lambda t, z: t * (_A @ z), _Z0_LIN, expm(_A / 2) @ _Z0_LIN),
    # z' = t^2 - z  =>  z(t) = t^2 - 2t + 2 + (z0 - 2) e^-t
    "forced": (lambda t, z: t * t - z, np.array([1.0, -0.5, 3.0]), 1.0 + (np.array([1.0, -0.5, 3.0]) - 2.0) * math.exp(-1)),
}


def _nonlinear_field(shape, seed):
    """Float32 field resembling the use: tanh(z W) (1 + t) - z, numpy (shared by both sides of a parity
    test, so only the solver arithmetic is compared)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((shape[-1], shape[-1])) / math.sqrt(shape[-1])).astype(np.float32)
    z0 = rng.standard_normal(shape).astype(np.float32)

    def f(t, z):
        return np.tanh(z @ w) * np.float32(1.0 + t) - z

    return f, z0


def _recording(f):
    ts = []

    def g(t, z):
        ts.append(float(t))
        return f(t, z)

    return g, ts


# -- convergence orders ------------------------------------------------------------------------------
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_step_convergence_order(name, problem):
    f, z0, exact = PROBLEMS[problem]
    steps = [16, 32, 64, 128]
    errs = [np.abs(FIXED[name](f, z0, n).z - exact).max() for n in steps]
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert all(abs(s - ORDER[name]) < 0.1 for s in slopes), (name, problem, errs, slopes)


def test_midpoint_and_heun_are_distinct_methods():
    f, z0, exact = PROBLEMS["forced"]
    a, b = midpoint(f, z0, 8).z, heun(f, z0, 8).z
    assert not np.allclose(a, b, rtol=0, atol=1e-9)


def test_dopri5_accuracy_scales_with_tolerance():
    for problem in ("gaussian_decay", "time_scaled_linear", "forced"):
        f, z0, exact = PROBLEMS[problem]
        tols = [1e-3, 1e-5, 1e-7, 1e-9]
        res = [dopri5(f, z0, t1=1.0, rtol=tol, atol=tol) for tol in tols]
        errs = [np.abs(r.z - exact).max() for r in res]
        assert all(e <= 50 * tol for e, tol in zip(errs, tols)), (problem, errs)
        assert all(errs[i + 1] < errs[i] for i in range(len(errs) - 1)), (problem, errs)
        assert errs[-1] < 1e-4 * errs[0]
        nfes = [r.nfe for r in res]
        assert nfes == sorted(nfes) and nfes[-1] > nfes[0], nfes


# -- bookkeeping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_callback_nfe_and_dtype(name):
    f, z0 = _nonlinear_field((2, 5, 8), seed=0)
    calls = []
    g, ts = _recording(f)
    kwargs = {} if name == "dopri5" else {"steps": 5}
    res = SOLVERS[name](g, z0, callback=lambda nfe, est: calls.append((nfe, est)), **kwargs)
    assert isinstance(res, ODEResult)
    assert res.z.dtype == np.float32 and res.z.shape == z0.shape
    assert res.nfe == len(ts) == len(calls)
    assert [c[0] for c in calls] == list(range(1, res.nfe + 1))
    assert all(isinstance(est, int) and est >= nfe for nfe, est in calls)
    if name == "dopri5":
        assert res.nfe == 2 + 6 * (res.n_steps + res.n_rejected)
    else:
        per_step = 1 if name == "euler" else 2
        assert res.nfe == per_step * 5 and res.n_steps == 5
        assert all(est == per_step * 5 for _, est in calls)


def test_fixed_step_time_grid():
    """Stage times on the float32-accumulated grid t_{k+1} = t_k + fl32(1/steps)."""
    f, z0 = _nonlinear_field((1, 3), seed=0)
    steps, dt = 6, np.float32(1 / 6)
    grid = [np.float32(0)]
    for _ in range(steps):
        grid.append(grid[-1] + dt)
    g, ts = _recording(f)
    euler(g, z0, steps)
    assert ts == [float(t) for t in grid[:-1]]
    g, ts = _recording(f)
    midpoint(g, z0, steps)
    assert ts == [float(x) for t in grid[:-1] for x in (t, t + np.float32(0.5) * dt)]
    g, ts = _recording(f)
    heun(g, z0, steps)
    assert ts == [float(x) for a, b in zip(grid[:-1], grid[1:]) for x in (a, b)]


# -- parity with the PyTorch reference ------------------------------------------------------------------
def test_euler_matches_audiocraft_loop_bitwise():
    torch = pytest.importorskip("torch", reason="the reference Euler loop is written with torch")
    f, z0 = _nonlinear_field((2, 50, 16), seed=3)
    grid_differs = False
    for steps in (1, 7, 33, 100):
        # audiocraft/models/flow_matching.py FlowMatchingModel.generate(euler=True)
        dt = 1 / steps
        z = torch.from_numpy(z0.copy())
        t = torch.zeros((1,))
        ref_ts = []
        for _ in range(steps):
            ref_ts.append(t.item())
            v = torch.from_numpy(f(t.item(), z.numpy()))
            z = z + dt * v
            t = t + dt
        g, ts = _recording(f)
        res = euler(g, z0, steps)
        assert ts == ref_ts
        assert res.z.dtype == np.float32
        assert np.array_equal(res.z, z.numpy()), np.abs(res.z - z.numpy()).max()
        grid_differs |= any(t != float(np.float32(k / steps)) for k, t in enumerate(ref_ts))
    assert grid_differs  # the float32-accumulated grid is not k/steps: the t comparison has teeth


def _torchdiffeq_run(f, z0, rtol, atol, t1=1.0 - 1e-5, t_dtype=None, norm=None):
    torch = pytest.importorskip("torch")
    from torchdiffeq import odeint

    ts = []

    def tf(t, z):
        ts.append(float(t))
        return torch.from_numpy(np.asarray(f(float(t), z.numpy())))

    t = torch.tensor([0, t1]) if t_dtype is None else torch.tensor([0, t1], dtype=t_dtype)
    options = {} if norm is None else {"norm": norm}
    z = odeint(tf, torch.from_numpy(z0), t, rtol=rtol, atol=atol, options=options)[-1].numpy()
    return z, ts


@pytest.mark.parametrize("problem", ["gaussian_decay", "time_scaled_linear"])
def test_dopri5_matches_torchdiffeq_float64(problem):
    pytest.importorskip("torchdiffeq")
    import torch

    f, z0, exact = PROBLEMS[problem]
    tol = 1e-7
    ref, ref_ts = _torchdiffeq_run(f, z0, tol, tol, t1=1.0, t_dtype=torch.float64)
    g, ts = _recording(f)
    res = dopri5(g, z0, t1=1.0, rtol=tol, atol=tol)
    assert res.nfe == len(ref_ts) and np.allclose(ts, ref_ts, rtol=0, atol=1e-12)
    assert np.abs(res.z - ref).max() <= 1e-12
    assert np.abs(res.z - exact).max() <= 50 * tol and np.abs(ref - exact).max() <= 50 * tol


@pytest.mark.parametrize("tol", [1e-4, 1e-5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dopri5_matches_torchdiffeq_float32(tol, seed):
    """audiocraft's call: odeint(f, z0, torch.tensor([0, 1 - 1e-5]), rtol, atol), default dopri5."""
    pytest.importorskip("torchdiffeq")
    f, z0 = _nonlinear_field((2, 50, 16), seed)
    ref, ref_ts = _torchdiffeq_run(f, z0, tol, tol)
    g, ts = _recording(f)
    res = dopri5(g, z0, rtol=tol, atol=tol)
    assert res.nfe == len(ref_ts)
    assert res.z.dtype == np.float32
    assert np.abs(res.z - ref).max() <= 1e-5
    assert np.allclose(ts, ref_ts, rtol=0, atol=1e-4)  # same steps; sqrt-ulp noise only
    assert max(ts) > 1.0 - 1e-5  # the last step overshoots t1: the result comes from the dense output


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-3), (np.float32, 1e-4), (np.float32, 1e-5), (np.float32, 1e-6),
                                        (np.float64, 1e-4), (np.float64, 1e-6), (np.float64, 1e-9)])
@pytest.mark.parametrize("shape", [(2, 50, 16), (3, 7)])
def test_dopri5_bitwise_with_correctly_rounded_norm(tol, shape, dtype):
    """Everything but sqrt is reproduced exactly: torch's MKL build computes float32 sqrt with VML
    (up to 1 ulp off), so with a correctly rounded sqrt in torchdiffeq's RMS norm the two runs agree
    bit for bit, including every time passed to f (states below torch's 32768-element thread split)."""
    pytest.importorskip("torchdiffeq")

    def norm(x):  # torchdiffeq's _rms_norm with numpy's (correctly rounded) sqrt
        return torch.tensor(np.sqrt(x.abs().pow(2).mean().numpy()), dtype=x.dtype)

    torch = pytest.importorskip("torch")
    f, z0 = _nonlinear_field(shape, seed=7)
    z0 = z0.astype(dtype)
    t_dtype = torch.float64 if dtype == np.float64 else None  # audiocraft's float32 time tensor otherwise
    ref, ref_ts = _torchdiffeq_run(f, z0, tol, tol, t_dtype=t_dtype, norm=norm)
    g, ts = _recording(f)
    res = dopri5(g, z0, rtol=tol, atol=tol)
    assert ts == ref_ts
    assert np.array_equal(res.z, ref), np.abs(res.z - ref).max()


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FIXED))
@pytest.mark.parametrize("steps", [0, -3, 2.5, True, None])
def test_fixed_step_bad_steps(name, steps):
    f, z0 = _nonlinear_field((1, 4), seed=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        FIXED[name](f, z0, steps)


@pytest.mark.parametrize("kwargs, match", [
    ({"rtol": 0.0}, "rtol must be > 0"),
    ({"rtol": -1e-5}, "rtol must be > 0"),
    ({"rtol": float("nan")}, "rtol must be a finite number"),
    ({"atol": -1.0}, "atol must be >= 0"),
    ({"t0": 1.0, "t1": 0.5}, "t1 must be greater than t0"),
    ({"max_steps": 0}, "max_steps must be a positive integer"),
])
def test_dopri5_bad_arguments(kwargs, match):
    f, z0 = _nonlinear_field((1, 4), seed=0)
    with pytest.raises(ValueError, match=match):
        dopri5(f, z0, **kwargs)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_z0(name, bad):
    f, z0 = _nonlinear_field((1, 4), seed=0)
    z0[0, 1] = bad
    args = () if name == "dopri5" else (4,)
    with pytest.raises(ValueError, match="non-finite"):
        SOLVERS[name](f, z0, *args)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_wrong_field_shape(name):
    z0 = np.zeros((2, 3), np.float32)
    args = () if name == "dopri5" else (4,)
    with pytest.raises(ValueError, match="vector field returned shape"):
        SOLVERS[name](lambda t, z: z[:1], z0, *args)


def test_integer_z0_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        euler(lambda t, z: z, np.arange(3), 4)


def test_dopri5_max_steps_exceeded():
    f, z0, _ = PROBLEMS["time_scaled_linear"]
    with pytest.raises(RuntimeError, match="max_steps=3"):
        dopri5(f, z0, rtol=1e-10, atol=1e-10, max_steps=3)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_step_nan_field(name):
    with pytest.raises(RuntimeError, match="non-finite"):
        FIXED[name](lambda t, z: np.full_like(z, np.nan), np.ones(3, np.float32), 4)


def test_dopri5_nan_field():
    z0 = np.ones(3, np.float32)
    with pytest.raises(RuntimeError, match="non-finite"):
        dopri5(lambda t, z: np.full_like(z, np.nan) if t > 0.1 else -z, z0)


# -- no torch in the runtime --------------------------------------------------------------------------------
def test_import_without_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "import jasco_runtime.solvers as s\n"
        "r = s.dopri5(lambda t, z: -z, np.ones(4, np.float32))\n"
        "assert abs(float(r.z[0]) - np.exp(-(1 - 1e-5))) < 1e-4, r.z\n"
        "bad = sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in ('torch', 'torchdiffeq'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name, steps", [("euler", 7), ("midpoint", 5), ("heun", 3)])
def test_the_device_schedule_replays_the_host_solver(name, steps):
    """``stage_evaluations`` (what the device loop runs) has the times the host solver passes to the field, and its
    stage updates, applied in float32 as solver_step applies them, give the host solver's state bit for bit."""
    from jasco_runtime.solvers import SolverSettings, stage_evaluations

    rng = np.random.default_rng(steps)
    A = rng.standard_normal((4, 4)).astype(np.float32) * np.float32(0.5)
    field = lambda t, z: (z @ A) * np.float32(1 + t)  # noqa: E731 - linear in z, t-dependent
    z0 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    seen = []
    host = SOLVERS[name](lambda t, z: (seen.append(t), field(t, z))[1], z0, steps)
    schedule = stage_evaluations(SolverSettings(name, steps))
    assert [e.t for e in schedule] == seen and len(schedule) == host.nfe
    f32 = np.float32
    base, stage, first = z0, z0, None
    for e in schedule:
        v = field(e.t, stage)
        k_prev = first if e.uses_first else np.zeros_like(v)
        nxt = base + (f32(e.c_prev) * k_prev + f32(e.c_new) * v)
        if e.keeps_first:
            first = v
        stage = nxt
        if e.ends_step:
            base = nxt
    np.testing.assert_array_equal(base, host.z)
