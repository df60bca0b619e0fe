"""ODE solvers for flow-matching sampling, numpy only.

Each solver integrates ``dz/dt = f(t, z)`` and knows nothing about engines or CFG (k-diffusion /
torchdiffeq style).  Every Runge-Kutta method is a Butcher tableau run by one generic stepper
(:func:`_rk_step`); ``dopri5`` adds torchdiffeq's step-size controller and dense output.

Arithmetic is done in the dtype of ``z0`` (float32 in practice) and mirrors the PyTorch reference
operation by operation, so results track it bit-for-bit where the reference is deterministic:

* ``euler`` reproduces audiocraft ``FlowMatchingModel.generate(euler=True)``
  (audiocraft/models/flow_matching.py): ``dt = 1 / steps`` as a Python float, ``t`` a float32 tensor
  accumulated as ``t = t + dt``, ``z = z + dt * v`` (torch casts the Python scalar to the tensor dtype).
* ``dopri5`` reproduces ``torchdiffeq.odeint(f, z0, torch.tensor([0, 1 - 1e-5]), rtol, atol)``
  (torchdiffeq 0.2.x, _impl/{rk_common,dopri5,misc,interp}.py), the adaptive path of the same
  audiocraft method, including torch's CPU summation order (SumKernel.cpp) for the stage sums and
  the RMS norm.  Two things are out of reach: torch's x86 (MKL) build computes sqrt with VML, up to
  1 ulp off the correctly rounded ``np.sqrt`` used here, and it splits sums of >= 32768 elements
  across threads.  Either can move a step size by an ulp; NFE and results then still agree to
  float32 rounding (bit-for-bit with a correctly rounded norm below the thread split).

The vector field is called as ``f(t, z)`` with ``t`` a Python float equal to the time the reference
passes (a float32 value when ``z0`` is float32) and must not modify ``z`` in place; its output is
cast to ``z0``'s dtype.
"""
from __future__ import annotations

import math
import operator
import typing as tp
from dataclasses import dataclass

import numpy as np

from .errors import JascoError


class SolverError(JascoError, RuntimeError):
    """The ODE solve failed (non-finite state, dopri5 step limits): a clear error, not a crash."""


VectorField = tp.Callable[[float, np.ndarray], np.ndarray]
Callback = tp.Callable[[int, int], None]

__all__ = ["ODEResult", "ButcherTableau", "SolverSettings", "euler", "midpoint", "heun", "dopri5", "SOLVERS", "solve"]


@dataclass
class ODEResult:
    z: np.ndarray  # final state
    nfe: int  # number of vector-field evaluations
    n_steps: int  # accepted steps
    n_rejected: int = 0


@dataclass(frozen=True)
class ButcherTableau:
    """Explicit RK tableau in torchdiffeq's layout (_impl/rk_common.py ``_ButcherTableau``).

    ``alpha[i]``/``beta[i]``: node and coefficients of stage ``i + 1`` (stage 0 is ``f(t0, z0)``);
    ``c_sol``: solution weights over all stages; ``c_error``: ``c_sol - c_hat`` (embedded error
    estimate) or ``None``; ``fsal``: the last stage is evaluated at the solution (first same as last),
    so the solution is that stage's input.
    """

    alpha: tp.Tuple[float, ...]
    beta: tp.Tuple[tp.Tuple[float, ...], ...]
    c_sol: tp.Tuple[float, ...]
    c_error: tp.Optional[tp.Tuple[float, ...]] = None
    fsal: bool = False

    @property
    def n_stages(self) -> int:
        return len(self.alpha) + 1


EULER_TABLEAU = ButcherTableau(alpha=(), beta=(), c_sol=(1.0,))
MIDPOINT_TABLEAU = ButcherTableau(alpha=(0.5,), beta=((0.5,),), c_sol=(0.0, 1.0))
HEUN_TABLEAU = ButcherTableau(alpha=(1.0,), beta=((1.0,),), c_sol=(0.5, 0.5))

# Dormand-Prince 5(4), the exact double expressions of torchdiffeq/_impl/dopri5.py (cast to the
# state dtype at use, as torchdiffeq does).
DOPRI5_TABLEAU = ButcherTableau(
    alpha=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    beta=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    c_sol=(35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0),
    c_error=(
        35 / 384 - 1951 / 21600,
        0,
        500 / 1113 - 22642 / 50085,
        125 / 192 - 451 / 720,
        -2187 / 6784 - -12231 / 42400,
        11 / 84 - 649 / 6300,
        -1. / 60.,
    ),
    fsal=True,
)
# Shampine's mid-point weights for dense output (torchdiffeq/_impl/dopri5.py DPS_C_MID).
DPS_C_MID = (
    6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2,
)
DOPRI5_ORDER = 5
ESTIMATED_NFE = 300  # audiocraft's ESTIMATED_ODE_SOLVER_STEPS: the progress guess before any step


# -- helpers ----------------------------------------------------------------------------------------
def _check_state(z0: tp.Any) -> np.ndarray:
    z = np.asarray(z0)
    if not np.issubdtype(z.dtype, np.floating):
        raise ValueError(f"z0 must be a floating-point array, got dtype {z.dtype}")
    if not np.isfinite(z).all():
        raise ValueError("z0 contains non-finite values (NaN or inf)")
    return z


def _check_steps(steps: tp.Any, name: str = "steps") -> int:
    n = None
    if not isinstance(steps, bool):
        try:
            n = operator.index(steps)
        except TypeError:
            pass
    if n is None or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {steps!r}")
    return n


class _Field:
    """Wraps ``f``: casts t to the state dtype (torchdiffeq ``_PerturbFunc``), checks the output,
    counts evaluations and reports them to the callback."""

    def __init__(self, f: VectorField, z0: np.ndarray, callback: tp.Optional[Callback], estimate: int):
        self.f, self.shape, self.dtype = f, z0.shape, z0.dtype
        self.callback, self.estimate, self.nfe = callback, estimate, 0

    def __call__(self, t: float, z: np.ndarray) -> np.ndarray:
        v = np.asarray(self.f(float(self.dtype.type(t)), z))
        if v.shape != self.shape:
            raise ValueError(f"vector field returned shape {list(v.shape)}, expected {list(self.shape)}")
        v = v.astype(self.dtype, copy=False)
        self.nfe += 1
        if self.callback is not None:
            self.callback(self.nfe, max(self.estimate, self.nfe))
        return v


def _short_row_sum(terms: tp.Sequence[np.ndarray]) -> np.ndarray:
    """SumKernel.cpp ``row_sum`` of fewer than 64 values (no cascade level is reached): 4 interleaved
    accumulators, the tail added to the first, then the other three added to it."""
    acc4: tp.List[tp.Optional[np.ndarray]] = [None] * 4
    n_ilp = len(terms) // 4
    for r in range(n_ilp):
        for j in range(4):
            x = terms[4 * r + j]
            acc4[j] = x if acc4[j] is None else acc4[j] + x
    acc = acc4[0]
    for x in list(terms[4 * n_ilp:]) + [a for a in acc4[1:] if a is not None]:
        acc = x if acc is None else acc + x
    return acc


def _torch_sum(terms: tp.Sequence[np.ndarray]) -> np.ndarray:
    """``torch.sum(stack(terms, -1), dim=-1)`` in torch's CPU order (SumKernel.cpp ``cascade_sum``) for
    fewer than 64 terms: with at least a 256-bit vector of terms (8 float32, 4 float64),
    ``vectorized_inner_sum`` (each lane summed by ``row_sum``, then the tail, then the lanes in order),
    else ``row_sum`` over the terms."""
    n = len(terms)
    if n == 1:
        return terms[0]
    lanes = 32 // terms[0].itemsize
    if n < lanes:
        return _short_row_sum(terms)
    n_vec = n // lanes
    vec = [_short_row_sum(terms[j:n_vec * lanes:lanes]) for j in range(lanes)]
    acc = None
    for x in list(terms[n_vec * lanes:]) + vec:
        acc = x if acc is None else acc + x
    return acc


def _seq_sum(parts: tp.Sequence[np.ndarray], zero: np.ndarray) -> np.ndarray:
    """``acc = 0; acc += p`` for each part, in order."""
    acc = zero
    for p in parts:
        acc = acc + p
    return acc


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """SumKernel.cpp ``multi_row_sum`` over axis 0 of ``rows`` [size, M]: runs of ``2**level_power``
    rows are summed, and the run sums cascade through 3 more accumulator levels."""
    size, m = rows.shape
    ceil_log2 = 1 if size <= 2 else (size - 1).bit_length()
    step = 1 << max(4, ceil_log2 // 4)
    zero = np.zeros(m, rows.dtype)
    n_runs = size // step
    runs = rows[:n_runs * step].reshape(n_runs, step, m)
    level = _seq_sum([runs[:, j] for j in range(step)], np.zeros((n_runs, m), rows.dtype))  # acc[0] per run
    acc = []
    for _ in range(2):  # acc[1], acc[2]: flushed upward every `step` additions
        n_full = level.shape[0] // step
        acc.append(_seq_sum(level[n_full * step:], zero))
        full = level[:n_full * step].reshape(n_full, step, m)
        level = _seq_sum([full[:, j] for j in range(step)], np.zeros((n_full, m), rows.dtype))
    acc.append(_seq_sum(level, zero))  # acc[3] never flushes
    acc0 = _seq_sum(rows[n_runs * step:], zero)
    return _seq_sum(acc, acc0)


def _row_sum(rows: np.ndarray) -> np.ndarray:
    """SumKernel.cpp ``row_sum`` over axis 0 of ``rows`` [n, W] (lane-wise): 4 interleaved
    ``multi_row_sum`` accumulators, the tail added to the first, then the others added to it."""
    n, w = rows.shape
    n_ilp = n // 4
    partial = _multi_row_sum(rows[:n_ilp * 4].reshape(n_ilp, 4 * w)).reshape(4, w)
    acc = _seq_sum(rows[n_ilp * 4:], partial[0])
    return _seq_sum(partial[1:], acc)


def _torch_cpu_sum(x: np.ndarray) -> np.floating:
    """``x.sum()`` as torch's CPU ``cascade_sum`` computes it single-threaded (SumKernel.cpp, the
    AVX2/default build: 256-bit vectors; torch does not dispatch this kernel to AVX512).  torch splits
    inputs of >= 32768 elements across threads, so there the last bit can differ."""
    flat = np.ravel(x)
    d = flat.dtype.type
    lanes = 32 // flat.itemsize
    n = flat.size
    if n < lanes:  # scalar_inner_sum
        return d(_row_sum(flat.reshape(n, 1))[0])
    n_vec = n // lanes
    vec_acc = _row_sum(flat[:n_vec * lanes].reshape(n_vec, lanes))
    acc = d(0)
    for v in flat[n_vec * lanes:]:
        acc = acc + v
    for v in vec_acc:
        acc = acc + v
    return d(0) + acc  # CastStoreAccumulate into the zero-filled output


def _rms_norm(x: np.ndarray) -> np.floating:
    """torchdiffeq ``_rms_norm``: ``x.abs().pow(2).mean().sqrt()`` in x's dtype; ``mean`` is
    ``sum / n`` on CPU (ReduceOps.cpp ``mean_out``).  float32/float64 follow torch's summation order;
    other dtypes are summed in float64."""
    d = x.dtype.type
    sq = np.square(np.abs(x))
    if x.dtype in (np.float32, np.float64):
        total = _torch_cpu_sum(sq)
    else:
        total = d(np.sum(sq, dtype=np.float64))
    return np.sqrt(total / d(sq.size))


def stage_times(tab: ButcherTableau, t0_: np.floating, dt_: np.floating, t1_: np.floating,
                 perturb: bool = False) -> tp.List[np.floating]:
    """Times of stages 1.. of an RK step, in the state dtype (torchdiffeq ``_runge_kutta_step``)."""
    d = type(t0_)
    return [(np.nextafter(t1_, t1_ - d(1)) if perturb else t1_) if a == 1.0 else t0_ + d(a) * dt_ for a in tab.alpha]


def _euler_grid(n: int, d: tp.Type[np.floating]) -> tp.Iterator[tp.Tuple[np.floating, np.floating]]:
    """(t, t_next) of the ``n`` fixed steps: ``dt = 1 / n`` (a Python float), ``t_{k+1} = t_k + dt`` in the
    state dtype (audiocraft/models/flow_matching.py)."""
    dt, t = 1 / n, d(0)
    for _ in range(n):
        t_next = t + d(dt)
        yield t, t_next
        t = t_next


def _rk_step(field: _Field, tab: ButcherTableau, z0: np.ndarray, f0: np.ndarray, t0: float, dt: float,
             t1: float, perturb: bool = False):
    """One explicit RK step (torchdiffeq ``_runge_kutta_step``): time, coefficients and state in
    z0's dtype; stage i input ``z0 + sum_j k_j * (beta_ij * dt)``.  ``perturb``: evaluate stages with
    node 1 just before ``t1`` (torchdiffeq ``Perturb.PREV``, used by its adaptive solvers).
    Returns ``(z1, k, error)``; ``error`` is None without ``c_error``."""
    d = z0.dtype.type
    t0_, dt_, t1_ = d(t0), d(dt), d(t1)
    k = [f0]
    zi = z0
    for ti, beta_i in zip(stage_times(tab, t0_, dt_, t1_, perturb), tab.beta):
        zi = z0 + _torch_sum([kj * (d(b) * dt_) for kj, b in zip(k, beta_i)])
        k.append(field(ti, zi))
    z1 = zi if tab.fsal else z0 + _torch_sum([kj * (d(c) * dt_) for kj, c in zip(k, tab.c_sol)])
    err = None if tab.c_error is None else _torch_sum([kj * (d(c) * dt_) for kj, c in zip(k, tab.c_error)])
    return z1, k, err


def _fixed_step_solve(f: VectorField, z0: tp.Any, steps: tp.Any, tab: ButcherTableau,
                      callback: tp.Optional[Callback]) -> ODEResult:
    """Fixed steps from t=0 to 1 on audiocraft's Euler time grid: ``dt = 1 / steps`` (Python float)
    and ``t_{k+1} = t_k + dt`` accumulated in z0's dtype (audiocraft/models/flow_matching.py)."""
    n = _check_steps(steps)
    z = _check_state(z0)
    d = z.dtype.type
    field = _Field(f, z, callback, estimate=n * tab.n_stages)
    for t, t_next in _euler_grid(n, d):
        z, _, _ = _rk_step(field, tab, z, field(t, z), t, 1 / n, t_next)
    if not np.isfinite(z).all():
        raise SolverError("the state became non-finite: the vector field returned NaN/inf or the steps are too large")
    return ODEResult(z=z, nfe=field.nfe, n_steps=n)


# -- fixed-step solvers -----------------------------------------------------------------------------
def euler(f: VectorField, z0: np.ndarray, steps: int, callback: tp.Optional[Callback] = None) -> ODEResult:
    """Explicit Euler, ``steps`` evaluations; bit-for-bit audiocraft ``FlowMatchingModel.generate``
    with ``euler=True`` (``z = z + dt * v; t = t + dt`` in float32)."""
    return _fixed_step_solve(f, z0, steps, EULER_TABLEAU, callback)


def midpoint(f: VectorField, z0: np.ndarray, steps: int, callback: tp.Optional[Callback] = None) -> ODEResult:
    """Explicit midpoint (2nd order, 2 evaluations per step) on the Euler time grid; the
    stage arithmetic of torchdiffeq's RK stepper."""
    return _fixed_step_solve(f, z0, steps, MIDPOINT_TABLEAU, callback)


def heun(f: VectorField, z0: np.ndarray, steps: int, callback: tp.Optional[Callback] = None) -> ODEResult:
    """Heun / explicit trapezoid (2nd order, 2 evaluations per step) on the Euler time grid; the
    stage arithmetic of torchdiffeq's RK stepper."""
    return _fixed_step_solve(f, z0, steps, HEUN_TABLEAU, callback)


# -- dopri5 -----------------------------------------------------------------------------------------
def initial_probe(d0: np.floating, d1: np.floating) -> np.floating:
    """The probe step ``h0`` of torchdiffeq ``_select_initial_step`` from ``d0 = ‖y0‖``, ``d1 = ‖f0‖`` (scaled RMS
    norms, in the state dtype)."""
    d = type(d0)
    h0 = d(1e-6) if d0 < d(1e-5) or d1 < d(1e-5) else d(0.01) * d0 / d1
    return abs(h0)


def initial_step(h0: np.floating, d1: np.floating, d2: np.floating, order: int) -> float:
    """The first step of torchdiffeq ``_select_initial_step`` from the probe ``h0``, ``d1 = ‖f0‖`` and
    ``d2 = ‖f(t0 + h0) − f0‖ / h0``; a float64."""
    d = type(h0)
    if d1 <= d(1e-15) and d2 <= d(1e-15):
        h1 = max(d(1e-6), h0 * d(1e-3))
    else:
        # torch: `0.01 / t` is `t.reciprocal() * 0.01`; a 0-dim `t ** 0.2` is computed in double
        h1 = d(float(np.reciprocal(max(d1, d2)) * d(0.01)) ** (1.0 / float(order + 1)))
    h1 = abs(h1)
    return float(min(d(100) * h0, h1))


def _select_initial_step(field: _Field, t0: float, y0: np.ndarray, f0: np.ndarray, order: int,
                         rtol: float, atol: float) -> float:
    """torchdiffeq ``_select_initial_step`` (Hairer, Norsett & Wanner, Solving ODEs I, II.4), in
    y0's dtype; costs one evaluation.  Returns the step as a float64."""
    d = y0.dtype.type
    scale = d(atol) + np.abs(y0) * d(rtol)
    d0 = _rms_norm(y0 / scale)
    d1 = _rms_norm(f0 / scale)
    h0 = initial_probe(d0, d1)
    y1 = y0 + h0 * f0
    f1 = field(t0 + float(h0), y1)  # float64 time, cast to the state dtype by the field
    d2 = abs(_rms_norm((f1 - f0) / scale) / h0)
    return initial_step(h0, d1, d2, order)


def error_ratio(err: np.ndarray, rtol: float, atol: float, y0: np.ndarray, y1: np.ndarray) -> np.floating:
    """torchdiffeq ``_compute_error_ratio`` with the RMS norm."""
    d = y0.dtype.type
    tol = d(atol) + d(rtol) * np.maximum(np.abs(y0), np.abs(y1))
    return abs(_rms_norm(err / tol))


def _optimal_step_size(last_step: float, ratio: float, safety: float = 0.9, ifactor: float = 10.0,
                       dfactor: float = 0.2, order: int = DOPRI5_ORDER) -> float:
    """torchdiffeq ``_optimal_step_size`` (float64): ``dt * min(ifactor, max(safety / err**(1/order),
    dfactor))``, never shrinking after an accepted step."""
    if ratio == 0:
        return last_step * ifactor
    if ratio < 1:
        dfactor = 1.0
    factor = min(ifactor, max(safety / ratio ** (1.0 / order), dfactor))
    return last_step * factor


def _interp_fit(y0: np.ndarray, y1: np.ndarray, k: tp.Sequence[np.ndarray], dt: float) -> tp.List[np.ndarray]:
    """torchdiffeq ``RKAdaptiveStepsizeODESolver._interp_fit`` + ``interp._interp_fit``: quartic
    through y0, y_mid, y1 with end slopes; coefficients ``[e, d, c, b, a]`` in y0's dtype."""
    dtd = y0.dtype.type(dt)
    y_mid = y0 + _torch_sum([kj * (y0.dtype.type(m) * dtd) for kj, m in zip(k, DPS_C_MID)])
    f0, f1 = k[0], k[-1]
    a = 2 * dtd * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
    b = dtd * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
    c = dtd * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
    return [y0, dtd * f0, c, b, a]


def _interp_evaluate(coeffs: tp.Sequence[np.ndarray], t0: float, t1: float, t: float) -> np.ndarray:
    """torchdiffeq ``_interp_evaluate``: x = (t - t0) / (t1 - t0) in float64, Horner-free powers in
    the state dtype."""
    x = coeffs[0].dtype.type((t - t0) / (t1 - t0))
    total = coeffs[0] + x * coeffs[1]
    x_power = x
    for coeff in coeffs[2:]:
        x_power = x_power * x
        total = total + x_power * coeff
    return total


class Dopri5Control:
    """torchdiffeq's adaptive step control for dopri5 (_impl/rk_common.py ``RKAdaptiveStepsizeODESolver``, default
    options), apart from the state arithmetic: the argument checks, the float64 time, the step limits, accepting or
    rejecting an attempt from its error ratio and the next step size.  The numpy solver (:func:`dopri5`) and the
    device loop (:mod:`jasco_runtime.device_solve`) both drive their steps with it."""

    def __init__(self, dtype: tp.Any, t0: float = 0.0, t1: float = 1.0 - 1e-5, rtol: float = 1e-5,
                 atol: float = 1e-5, max_steps: int = 10000):
        d = np.dtype(dtype).type
        for name, v in (("rtol", rtol), ("atol", atol), ("t0", t0), ("t1", t1)):
            if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if rtol <= 0:
            raise ValueError(f"rtol must be > 0, got {rtol}")
        if atol < 0:
            raise ValueError(f"atol must be >= 0, got {atol}")
        self.max_steps = _check_steps(max_steps, "max_steps")
        self.t, self.t_end = float(d(t0)), float(d(t1))  # rounded like audiocraft's float32 time tensor
        if not self.t_end > self.t:
            raise ValueError(f"t1 must be greater than t0 (in z0's dtype {np.dtype(dtype)}), got t0={t0}, t1={t1}")
        self.rtol, self.atol = float(rtol), float(atol)
        self.dt = 0.0
        self.n_accepted = self.n_rejected = 0

    @property
    def running(self) -> bool:
        return self.t_end > self.t

    def attempt(self) -> tp.Tuple[float, float, float]:
        """The next attempt's ``(t, dt, t + dt)`` (float64), or :class:`SolverError` past the step limit or when the
        step no longer moves t."""
        if self.n_accepted + self.n_rejected >= self.max_steps:
            raise SolverError(f"dopri5 exceeded max_steps={self.max_steps} (accepted {self.n_accepted}, rejected "
                              f"{self.n_rejected}, reached t={self.t:.6g} of {self.t_end:.6g}); loosen rtol/atol or "
                              "raise max_steps")
        dt = self.dt if math.isfinite(self.dt) else 0.0  # torchdiffeq: min_step
        self.dt = dt = max(dt, 0.0)
        t_new = self.t + dt
        if not t_new > self.t:
            raise SolverError(f"dopri5 step size underflow (dt={dt!r} at t={self.t!r}): the vector field may return "
                              "non-finite values or the problem is too stiff")
        return self.t, dt, t_new

    def settle(self, ratio: np.floating, t_new: float, finite: tp.Callable[[], bool]) -> bool:
        """Accept (True: t moves to ``t_new``) or reject the attempt by its error ratio, then size the next step;
        ``finite()`` checks an accepted state."""
        if math.isnan(ratio):
            raise SolverError(f"dopri5: the vector field returned non-finite values near t={self.t:.6g}")
        accepted = bool(ratio <= 1)
        if accepted:
            if not finite():
                raise SolverError(f"dopri5: the state became non-finite at t={t_new:.6g}")
            self.t = t_new
            self.n_accepted += 1
        else:
            self.n_rejected += 1
        self.dt = _optimal_step_size(self.dt, float(ratio))
        return accepted

    def estimate(self, nfe: int) -> int:
        """The progress total: evaluations so far plus 6 per step still to go at the current step size."""
        dt = self.dt
        remaining = math.ceil((self.t_end - self.t) / dt) if (dt > 0 and math.isfinite(dt)) else self.max_steps
        return nfe + (DOPRI5_TABLEAU.n_stages - 1) * max(1, min(remaining, self.max_steps))


def dopri5(f: VectorField, z0: np.ndarray, t0: float = 0.0, t1: float = 1.0 - 1e-5, rtol: float = 1e-5,
           atol: float = 1e-5, callback: tp.Optional[Callback] = None, max_steps: int = 10000) -> ODEResult:
    """Adaptive Dormand-Prince 5(4): ``torchdiffeq.odeint(f, z0, torch.tensor([t0, t1]), rtol=rtol,
    atol=atol)`` (method 'dopri5', default options) as audiocraft calls it.

    ``t0``/``t1`` are rounded to z0's dtype like audiocraft's float32 time tensor; time arithmetic is
    float64 and each step casts it to z0's dtype (torchdiffeq mixed precision).  NFE = 2 (f(t0) +
    initial-step probe) + 6 per attempted step (FSAL).  The value at ``t1`` comes from the dense
    output of the last step.  ``max_steps`` bounds attempted steps (torchdiffeq ``max_num_steps``).
    """
    z = _check_state(z0)
    ctl = Dopri5Control(z.dtype, t0, t1, rtol, atol, max_steps)
    field = _Field(f, z, callback, estimate=ESTIMATED_NFE)
    f0 = field(ctl.t, z)
    ctl.dt = _select_initial_step(field, ctl.t, z, f0, DOPRI5_ORDER - 1, ctl.rtol, ctl.atol)
    last = None
    while ctl.running:
        t, dt, t_new = ctl.attempt()
        field.estimate = ctl.estimate(field.nfe)
        z_new, k, err = _rk_step(field, DOPRI5_TABLEAU, z, f0, t, dt, t_new, perturb=True)
        if ctl.settle(error_ratio(err, ctl.rtol, ctl.atol, z, z_new), t_new, lambda: bool(np.isfinite(z_new).all())):
            last = (t, z, z_new, k, dt)
            z, f0 = z_new, k[-1]
    return ODEResult(z=dense_output(last, ctl), nfe=field.nfe, n_steps=ctl.n_accepted, n_rejected=ctl.n_rejected)


def dense_output(last: tp.Tuple[float, np.ndarray, np.ndarray, tp.Sequence[np.ndarray], float],
                 ctl: Dopri5Control) -> np.ndarray:
    """The state at ``t_end`` from the last accepted step ``(t, y0, y1, k, dt)`` (torchdiffeq's quartic dense
    output)."""
    t_prev, y0, y1, k, dt_last = last
    return _interp_evaluate(_interp_fit(y0, y1, k, dt_last), t_prev, ctl.t, ctl.t_end)


SOLVERS: tp.Dict[str, tp.Callable[..., ODEResult]] = {
    "euler": euler,
    "midpoint": midpoint,
    "heun": heun,
    "dopri5": dopri5,
}


@dataclass(frozen=True)
class SolverSettings:
    """Which solver and how: ``steps`` for the fixed-step solvers, ``rtol``/``atol`` for dopri5."""

    solver: str
    steps: tp.Optional[int] = None
    rtol: tp.Optional[float] = None
    atol: tp.Optional[float] = None

    @property
    def fixed_step(self) -> bool:
        return self.solver != "dopri5"

    @property
    def tolerances(self) -> tp.Dict[str, float]:
        """dopri5's ``rtol``/``atol`` where given (the rest take :func:`dopri5`'s defaults)."""
        return {k: v for k, v in (("rtol", self.rtol), ("atol", self.atol)) if v is not None}

    @property
    def expected_nfe(self) -> tp.Optional[int]:
        """Evaluations of a fixed-step solve (None for dopri5: it adapts)."""
        per_step = {"euler": 1, "midpoint": 2, "heun": 2}
        return None if not self.fixed_step or self.steps is None else per_step[self.solver] * self.steps


@dataclass(frozen=True)
class StageEvaluation:
    """One evaluation of a fixed-step solve as a loop on the device runs it: the field at ``t`` of the current
    stage input, then the next stage input ``base + (c_prev · k_prev + c_new · v)`` where ``base`` is the
    step's start state and ``k_prev`` the step's first derivative (``uses_first``; else zero) — the same
    float32 products and sums as :func:`_rk_step`.  ``keeps_first``: ``v`` is the step's first derivative;
    ``ends_step``: the next stage input is the next step's state."""

    t: float
    c_prev: float
    c_new: float
    uses_first: bool
    keeps_first: bool
    ends_step: bool


def stage_evaluations(settings: SolverSettings, dtype: tp.Any = np.float32) -> tp.List[StageEvaluation]:
    """The evaluations of a fixed-step solve (euler, midpoint, heun: at most two stages, so a stage input adds at
    most two derivatives), in order.  dopri5 adapts its steps on the host: it has no schedule."""
    if not settings.fixed_step:
        raise ValueError("dopri5 adapts its step size: it has no fixed evaluation schedule")
    tab = {"euler": EULER_TABLEAU, "midpoint": MIDPOINT_TABLEAU, "heun": HEUN_TABLEAU}[settings.solver]
    n = _check_steps(settings.steps)
    d = np.dtype(dtype).type
    dt_ = d(1 / n)
    out: tp.List[StageEvaluation] = []
    for t, t_next in _euler_grid(n, d):
        if tab.n_stages == 1:  # z + Σ[k0·(c·dt)]: one term, the sum is the term
            out.append(StageEvaluation(float(t), 0.0, float(d(tab.c_sol[0]) * dt_), False, False, True))
            continue
        (t1,), ((b,),) = stage_times(tab, t, dt_, t_next), tab.beta
        out.append(StageEvaluation(float(t), 0.0, float(d(b) * dt_), False, True, False))
        out.append(StageEvaluation(float(t1), float(d(tab.c_sol[0]) * dt_), float(d(tab.c_sol[1]) * dt_),
                                   True, False, True))
    return out


def solve(settings: SolverSettings, f: VectorField, z0: np.ndarray,
          callback: tp.Optional[Callback] = None) -> ODEResult:
    """Every solver behind one signature (k-diffusion style): callers never branch on the solver's name."""
    if settings.solver not in SOLVERS:
        raise ValueError(f"unknown solver {settings.solver!r}; use one of {', '.join(SOLVERS)}")
    if settings.fixed_step:
        return SOLVERS[settings.solver](f, z0, settings.steps, callback=callback)
    return dopri5(f, z0, callback=callback, **settings.tolerances)
