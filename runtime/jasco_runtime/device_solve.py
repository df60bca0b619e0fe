"""An ODE solve that keeps its state on the engines' device: its evaluations copy nothing through host memory.

Per evaluation (audiocraft models/flow_matching.py ``generate``; the steppers of :mod:`jasco_runtime.solvers`), two
engine calls on device arrays:

1. ``flow_step`` over the rows of every prompt and CFG term (prompt-major: prompt p's terms are rows
   ``[p·n, (p+1)·n)``), in chunks of its own profile;
2. ``solver_step`` (an exported, gated graph with no weights; its contract: :mod:`jasco_runtime.stage_layout`):
   each prompt's CFG sum with its own weights, the next stage input ``base + Σ_j k_j·c_j`` over up to seven stage
   derivatives, that input repeated per term as the next rows, and the error norm's squared sum.

Fixed steps (Euler, midpoint, Heun) follow a schedule uploaded once per solve: per evaluation 0 bytes cross.  dopri5
keeps torchdiffeq's step-size control on the host (:class:`~jasco_runtime.solvers.Dopri5Control`: float64 time,
which TensorRT has not): per attempted step (6 evaluations) one upload of the step's coefficients and stage times
(13 rows of 256 bytes while a flow-step chunk has at most 64 rows) and one download of its error norm's squared
sums (a 256-byte row per prompt chunk); its initial step probe and the dense output at the
end are the same calls plus one download of the last step's states.

Everything is allocated once per solve in the flow engine's :class:`~jasco_runtime.backends.base.Workspace` and freed
when the solve ends, on every path.  The stage arithmetic is the numpy solver's float32 operations in the same order
(bit for bit on the CPU); the CFG sum is a reduction (within 1e-6) and the error norm is summed in another order
than torch's (dopri5's step sizes can move by an ulp: the states then agree to float32 rounding).
"""
from __future__ import annotations

import typing as tp

import numpy as np

from . import stage_layout as layout
from .backends.base import DeviceArray, Engine, Traffic, Workspace, row_slices
from .errors import Cancelled
from .solvers import (DOPRI5_ORDER, DOPRI5_TABLEAU, ESTIMATED_NFE, Callback, Dopri5Control, ODEResult, SolverError,
                      SolverSettings, StageEvaluation, dense_output, error_ratio, initial_probe, initial_step,
                      stage_evaluations, stage_times)

ALIGN_FLOATS = 64  # 256 bytes: TensorRT takes tensor addresses aligned to 256 bytes
SIGMA_MIN = 1e-5  # the continuation σ_min solver_step is exported with (audiocraft solvers/jasco.py `_z`)
Cancel = tp.Callable[[], bool]
# dopri5's per-step plan: row S1 (its first stage input), rows F1–F5 (the stage inputs after evaluations 1–5),
# row E (the error estimate after evaluation 6), then the six evaluations' times
_S1, _F, _E, _T = 0, 1, 6, 7
_PLAN_ROWS = _T + 6


class Constraint(tp.Protocol):
    """A long-song window's continuation (:class:`jasco_runtime.longform.Continuation`): its first ``frames``
    frames follow the flow path from ``noise`` to ``known`` ([P, frames, D]) with the constant ``velocity``."""

    frames: int
    known: np.ndarray
    noise: np.ndarray
    velocity: np.ndarray
    sigma_min: float

    def path(self, t: float) -> np.ndarray: ...

    def wrap(self, field: tp.Callable[[float, np.ndarray], np.ndarray]) -> tp.Callable[[float, np.ndarray], np.ndarray]: ...


def _aligned(n: int) -> int:
    return max(1, -(-n // ALIGN_FLOATS)) * ALIGN_FLOATS


def _row(array: DeviceArray, e: int, n: int) -> DeviceArray:
    """The first ``n`` values of row ``e`` of a padded table (256-byte aligned rows)."""
    return array.rows(slice(e, e + 1)).head(n)


class DeviceSolve:
    """One solve's device arrays and its evaluation loop.

    ``feeds``: the flow step's conditions with term-major rows over ``weights.shape[0]`` prompts (as the host
    path builds them); ``weights`` [P, n]: each prompt's CFG weight per term (1 for a single term);
    ``constraint``: a continued window's path (its frames see the path, their field is its velocity).
    """

    def __init__(self, flow: Engine, step: Engine, feeds: tp.Mapping[str, np.ndarray], weights: np.ndarray,
                 constraint: tp.Optional[Constraint] = None):
        if constraint is not None and constraint.sigma_min != SIGMA_MIN:
            raise ValueError(f"solver_step continues windows with σ_min {SIGMA_MIN}, not {constraint.sigma_min}")
        self.flow, self.step, self.constraint = flow, step, constraint
        self.prompts, self.terms = (int(d) for d in weights.shape)
        P, n = self.prompts, self.terms
        # term-major row i·P + p → prompt-major row p·n + i
        order = np.arange(P * n).reshape(n, P).T.reshape(-1)
        self.feeds = {k: np.ascontiguousarray(v[order]) for k, v in feeds.items()}
        self.weights = np.ascontiguousarray(weights, np.float32)
        # the profile's row ranges, cut at the last row (their lengths size the schedule views)
        self.flow_chunks = [slice(*s.indices(P * n)[:2]) for s in row_slices(P * n, flow.max_batch)]
        self.step_chunks = [slice(*s.indices(P)[:2]) for s in row_slices(P, step.max_batch)]
        self.width = _aligned(max(max(s.stop - s.start for s in self.flow_chunks), layout.SIZE))

    def solve(self, settings: SolverSettings, z0: np.ndarray, callback: tp.Optional[Callback] = None,
              cancel: tp.Optional[Cancel] = None, loop_traffic: tp.Optional[Traffic] = None) -> ODEResult:
        """Integrate from ``z0`` [P, T, D] (float32); ``callback(nfe, total)`` after each evaluation, ``cancel()``
        before each one.  ``loop_traffic`` gets what the evaluations (not the set-up and result) copied and
        allocated."""
        z0 = np.ascontiguousarray(z0, np.float32)
        if not np.isfinite(z0).all():
            raise ValueError("z0 contains non-finite values (NaN or inf)")
        if z0.shape[0] != self.prompts:
            raise ValueError(f"z0 has {z0.shape[0]} prompts, the conditions {self.prompts}")
        control = None if settings.fixed_step else Dopri5Control(np.float32, **settings.tolerances)
        schedule = stage_evaluations(settings, np.float32) if control is None else []
        with self.flow.workspace() as ws:
            loop = _Loop(self, ws, z0, callback, cancel)
            try:
                res = loop.fixed(schedule, int(settings.steps)) if control is None else loop.dopri5(control)
            finally:
                loop.arrays.clear()  # no view of an OrtValue outlives the workspace (a traceback keeps this frame)
        if loop_traffic is not None:
            loop_traffic.h2d += loop.spent.h2d
            loop_traffic.d2h += loop.spent.d2h
            loop_traffic.allocations += loop.spent.allocations
        if not np.isfinite(res.z).all():
            raise SolverError("the state became non-finite: the vector field returned NaN/inf or the steps are too large")
        return res


class _Loop:
    """The device arrays of one solve (allocated and uploaded once) and the two engine calls an evaluation makes."""

    def __init__(self, solve: DeviceSolve, ws: Workspace, z0: np.ndarray, callback: tp.Optional[Callback],
                 cancel: tp.Optional[Cancel]):
        self.s, self.ws, self.z0, self.callback, self.cancel = solve, ws, z0, callback, cancel
        self.nfe = 0
        self.spent = Traffic()
        P, n = solve.prompts, solve.terms
        state = z0.shape
        keep, fixed = np.zeros(state[:2] + (1,), np.float32), {k: np.zeros(state, np.float32)
                                                                for k in ("velocity", "noise", "known")}
        if solve.constraint is not None:
            f = solve.constraint.frames
            keep[:, :f] = 1
            for k in fixed:
                fixed[k][:, :f] = getattr(solve.constraint, k)
        self.arrays: tp.Dict[str, tp.Any] = {
            "continuation": [{"keep": ws.upload(keep[s]), **{k: ws.upload(v[s]) for k, v in fixed.items()}}
                             for s in solve.step_chunks],
            "conditions": [{k: ws.upload(v[s]) for k, v in solve.feeds.items()} for s in solve.flow_chunks],
            "weights": [ws.upload(solve.weights[s]) for s in solve.step_chunks],  # own arrays: 256-byte aligned
            "z_rows": ws.empty((P, n) + state[1:]),
            "v_rows": ws.empty((P, n) + state[1:]),
            "zero": ws.upload(np.zeros(state, np.float32)),  # every slot a call does not use
            # per prompt chunk, a 256-byte aligned row: the error norm's squared sums
            "sq": ws.empty((len(solve.step_chunks), _aligned(max(c.stop - c.start for c in solve.step_chunks)))),
        }

    def first_rows(self, z0: np.ndarray, t: float) -> None:
        """The first evaluation's rows: z0 per term (the continuation's path at ``t`` on its frames)."""
        first = z0
        if self.s.constraint is not None:
            first = z0.copy()
            first[:, :self.s.constraint.frames] = self.s.constraint.path(t)
        rows = self.arrays["z_rows"]
        self.ws.write(rows, np.ascontiguousarray(np.broadcast_to(first[:, None], rows.shape)))

    # -- the two calls of an evaluation ---------------------------------------------------------------------------
    def evaluate(self, t_row: DeviceArray) -> None:
        """flow_step over the rows (``t_row``: a padded row of the evaluation's time); ``cancel()`` first."""
        if self.cancel is not None and self.cancel():
            raise Cancelled("the generation was cancelled (the request timed out or the client went away)")
        s, a = self.s, self.arrays
        rows = s.prompts * s.terms
        z_rows, v_rows = (a[k].reshape(rows, *a[k].shape[2:]) for k in ("z_rows", "v_rows"))
        for chunk, conditions in zip(s.flow_chunks, a["conditions"]):
            s.flow.run_device({"z": z_rows.rows(chunk), "t": t_row.head(chunk.stop - chunk.start), **conditions},
                              {"v": v_rows.rows(chunk)}, self.ws)
        self.nfe += 1

    def tick(self, estimate: int) -> None:
        """Wait for the queued work (no copy), so progress is work done and a cancel lands within one evaluation."""
        self.ws.synchronize()
        if self.callback is not None:
            self.callback(self.nfe, max(estimate, self.nfe))

    def combine(self, c: DeviceArray, base: DeviceArray, slots: tp.Sequence[tp.Optional[DeviceArray]],
                v_out: DeviceArray, z_out: DeviceArray, ref: tp.Optional[tp.Tuple[DeviceArray, DeviceArray]] = None
                ) -> None:
        """solver_step over every prompt chunk: ``v_out`` the guided field of the last rows, ``z_out`` the stage
        input ``base + Σ slot_j·c_j`` (slots past ``slots``, and None ones, read zeros), the next rows from it, and
        the squared sums of ``z_out`` against ``ref`` (a, b; default: base) into ``sq``."""
        s, a = self.s, self.arrays
        bound = list(slots) + [None] * (layout.SLOTS - len(slots))
        ref_a, ref_b = ref if ref is not None else (base, base)
        for i, (chunk, weights, fixed) in enumerate(zip(s.step_chunks, a["weights"], a["continuation"])):
            ks = {name: (k if k is not None else a["zero"]).rows(chunk) for name, k in zip(layout.SLOT_NAMES, bound)}
            s.step.run_device(
                {"v_rows": a["v_rows"].rows(chunk), "weights": weights, "base": base.rows(chunk), **ks,
                 "c": c.head(layout.SIZE), "a": ref_a.rows(chunk), "b": ref_b.rows(chunk), **fixed},
                {"v": v_out.rows(chunk), "z": z_out.rows(chunk), "z_rows": a["z_rows"].rows(chunk),
                 "sq": _row(a["sq"], i, chunk.stop - chunk.start)}, self.ws)

    def norm(self) -> np.float32:
        """The RMS norm of the last :meth:`combine`'s scaled ``z_out`` (torchdiffeq ``_rms_norm``: sqrt of the
        mean square, in float32), from its squared sums: one download."""
        sq = self.ws.download(self.arrays["sq"])
        total = sum(float(np.sum(sq[i, :c.stop - c.start], dtype=np.float64)) for i, c in enumerate(self.s.step_chunks))
        n = np.float32(int(np.prod(self.arrays["zero"].shape)))
        return np.sqrt(np.float32(total) / n)

    # -- what the evaluations copied: from the end of the set-up to the result -------------------------------------
    def start(self) -> None:
        self._start = [e.traffic.copy() for e in (self.s.flow, self.s.step)]

    def stop(self) -> None:
        spent = [e.traffic.since(b) for e, b in zip((self.s.flow, self.s.step), self._start)]
        self.spent = Traffic(sum(x.h2d for x in spent), sum(x.d2h for x in spent), sum(x.allocations for x in spent))

    # -- fixed steps: a schedule uploaded once ------------------------------------------------------------------
    def fixed(self, schedule: tp.Sequence[StageEvaluation], steps: int) -> ODEResult:
        """Euler, midpoint or Heun: per evaluation flow_step, then solver_step writing the next stage input (a
        step's first derivative kept for its second stage), the step states ping-ponged."""
        ws, a, width = self.ws, self.arrays, self.s.width
        t_sched = np.zeros((len(schedule), width), np.float32)
        c_sched = np.zeros((len(schedule), width), np.float32)
        for e, ev in enumerate(schedule):
            t_sched[e] = ev.t
            seen = schedule[e + 1].t if e + 1 < len(schedule) else 1.0  # the time the next rows are seen at
            c_sched[e] = (layout.coefficients([ev.c_prev, ev.c_new], v_slot=1, seen_at=seen, width=width)
                          if ev.uses_first else layout.coefficients([ev.c_new], v_slot=0, seen_at=seen, width=width))
        shape = a["zero"].shape
        a.update(t=ws.upload(t_sched), c=ws.upload(c_sched), base=[ws.upload(self.z0), ws.empty(shape)],
                 first=ws.empty(shape), stage=ws.empty(shape), scratch=ws.empty(shape))
        self.first_rows(self.z0, schedule[0].t)
        cur = 0
        self.start()
        for e, ev in enumerate(schedule):
            self.evaluate(_row(a["t"], e, width))
            self.combine(_row(a["c"], e, width), a["base"][cur], [a["first"]] if ev.uses_first else [],
                         a["first"] if ev.keeps_first else a["scratch"], a["base"][cur ^ 1] if ev.ends_step else a["stage"])
            cur ^= int(ev.ends_step)
            self.tick(len(schedule))
        self.stop()
        return ODEResult(z=ws.download(a["base"][cur]), nfe=self.nfe, n_steps=steps)

    # -- dopri5: torchdiffeq's step control on the host, the states on the device --------------------------------
    def dopri5(self, ctl: Dopri5Control) -> ODEResult:
        """Dormand-Prince 5(4) as :func:`jasco_runtime.solvers.dopri5` runs it: f(t0), the initial step probe, then
        attempts of six evaluations (first same as last), each accepted or rejected by its error ratio; the state at
        the end from the last step's dense output."""
        ws, a, width, tab = self.ws, self.arrays, self.s.width, DOPRI5_TABLEAU  # every view in a: freed with it
        d = np.float32
        atol, rtol = d(ctl.atol), d(ctl.rtol)
        shape = a["zero"].shape
        a.update(plan=ws.empty((_PLAN_ROWS, width)), y=[ws.upload(self.z0), ws.empty(shape)],
                 k=[ws.empty(shape) for _ in range(layout.SLOTS)], stage=ws.empty(shape),
                 scratch_v=ws.empty(shape), scratch_z=ws.empty(shape))
        plan = np.zeros((_PLAN_ROWS, width), np.float32)
        row = lambda r: _row(a["plan"], r, width)  # noqa: E731
        y, k = a["y"], a["k"]  # roles, swapped in place: y[0] the step's start, k[0] its first derivative
        self.first_rows(self.z0, ctl.t)
        self.start()
        # f(t0), and ‖f0‖ against y0 (torchdiffeq _select_initial_step)
        plan[_T] = d(ctl.t)
        plan[_S1] = layout.coefficients([1], v_slot=0, atol=atol, rtol=rtol, width=width)
        ws.write(a["plan"], plan)
        self.evaluate(row(_T))
        self.combine(row(_S1), a["zero"], [], k[0], a["scratch_z"], ref=(y[0], y[0]))
        self.tick(ESTIMATED_NFE)
        d0, d1 = error_ratio(self.z0, ctl.rtol, ctl.atol, self.z0, self.z0), self.norm()
        # the probe y0 + h0·f0, f there, and ‖f1 − f0‖ against y0
        h0 = initial_probe(d0, d1)
        t_probe = d(ctl.t + float(h0))
        plan[_T] = t_probe
        plan[_S1] = layout.coefficients([h0], seen_at=t_probe, width=width)
        plan[_E] = layout.coefficients([-1, 1], v_slot=1, atol=atol, rtol=rtol, width=width)
        ws.write(a["plan"], plan)
        self.combine(row(_S1), y[0], [k[0]], a["scratch_v"], a["stage"])
        self.evaluate(row(_T))
        self.combine(row(_E), a["zero"], [k[0]], a["scratch_v"], a["scratch_z"], ref=(y[0], y[0]))
        self.tick(ESTIMATED_NFE)
        ctl.dt = initial_step(h0, d1, abs(self.norm() / h0), DOPRI5_ORDER - 1)
        while ctl.running:
            t, dt, t_new = ctl.attempt()
            estimate = ctl.estimate(self.nfe)
            t0_, dt_, t1_ = d(t), d(dt), d(t_new)
            times = stage_times(tab, t0_, dt_, t1_, perturb=True)
            plan[_S1] = layout.coefficients([d(b) * dt_ for b in tab.beta[0]], seen_at=times[0], width=width)
            for i in range(1, 6):  # after evaluation i: stage i + 1's input, this call's field in slot i
                plan[_F + i - 1] = layout.coefficients([d(b) * dt_ for b in tab.beta[i]], v_slot=i, seen_at=times[i],
                                                       width=width)
            plan[_E] = layout.coefficients([d(c) * dt_ for c in tab.c_error], v_slot=6, atol=atol, rtol=rtol,
                                           width=width)
            plan[_T:_T + 6] = np.asarray(times, np.float32)[:, None]
            ws.write(a["plan"], plan)
            self.combine(row(_S1), y[0], [k[0]], a["scratch_v"], a["stage"])
            for i in range(1, 7):
                self.evaluate(row(_T + i - 1))
                if i < 6:  # stage 6's input is the step's solution (first same as last)
                    self.combine(row(_F + i - 1), y[0], k[:i], k[i], y[1] if i == 5 else a["stage"])
                else:
                    self.combine(row(_E), a["zero"], k[:6], k[6], a["scratch_z"], ref=(y[0], y[1]))
                self.tick(estimate)
            if ctl.settle(self.norm(), t_new, finite=lambda: True):  # a non-finite state: NaN norms, the end check
                a["last"] = (t, y[0], y[1], list(k), dt)
                y[0], y[1], k[0], k[6] = y[1], y[0], k[6], k[0]
        self.stop()
        t_prev, y0, y1, ks, dt_last = a["last"]
        z = dense_output((t_prev, ws.download(y0), ws.download(y1), [ws.download(x) for x in ks], dt_last), ctl)
        return ODEResult(z=z, nfe=self.nfe, n_steps=ctl.n_accepted, n_rejected=ctl.n_rejected)


def device_solver_available(flow: Engine, step: tp.Optional[Engine], settings: SolverSettings,
                            terms: int = 1, max_terms: tp.Optional[int] = None,
                            frame_bytes: int = ALIGN_FLOATS * 4) -> tp.Optional[str]:
    """None when a solve with ``settings`` can keep its state on the device, else why not (one phrase).
    ``terms``: the solve's CFG terms, at most solver_step's profile (``max_terms``); ``frame_bytes``: one prompt's
    state (T·D·4), a multiple of 256 so every row view is an address TensorRT takes."""
    if step is None:
        return "the export has no solver_step graph (exported before it existed: re-export)"
    if not set(layout.SLOT_NAMES) <= set(step.input_names) or "sq" not in step.output_names:
        return "the export's solver_step predates the 7-slot stage layout (re-export for the device loop)"
    if flow.device != step.device or type(flow) is not type(step):
        return f"flow_step ({type(flow).__name__}) and solver_step ({type(step).__name__}) run on different backends"
    if max_terms is not None and terms > max_terms:
        return f"{terms} CFG terms, solver_step's profile takes {max_terms}"
    if frame_bytes % (ALIGN_FLOATS * 4):
        return f"a prompt's state is {frame_bytes} bytes, not a multiple of 256 (TensorRT's tensor address alignment)"
    return None
