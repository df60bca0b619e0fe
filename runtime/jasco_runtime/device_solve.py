"""A fixed-step ODE solve that keeps its state on the engines' device: nothing crosses host memory per evaluation.

Per evaluation (audiocraft models/flow_matching.py ``generate`` with ``euler=True``, and the midpoint / Heun
steppers of :mod:`jasco_runtime.solvers`), two engine calls on device arrays:

1. ``flow_step`` over the rows of every prompt and CFG term (prompt-major: prompt p's terms are rows
   ``[p·n, (p+1)·n)``), in chunks of its own profile; ``t`` is read from a schedule uploaded once per solve;
2. ``solver_step`` (an exported, gated graph with no weights): each prompt's CFG sum with its own weights, the
   next stage input ``base + (c_prev·k_prev + c_new·v)`` and that input repeated per term as the next rows.

Everything is allocated once per solve in the flow engine's :class:`~jasco_runtime.backends.base.Workspace` and
freed when the solve ends, on every path.  Host↔device traffic of a solve: the conditions, the initial noise,
the schedules and one zero buffer in, the final state out; per evaluation, 0 bytes.  The CFG sum and the stage
updates are the numpy solver's float32 operations in the same order (the CFG sum as a reduction: within 1e-6).
"""
from __future__ import annotations

import typing as tp

import numpy as np

from .backends.base import DeviceArray, Engine, Traffic, Workspace, row_slices
from .errors import Cancelled
from .solvers import Callback, ODEResult, SolverError, SolverSettings, StageEvaluation, stage_evaluations

ALIGN_FLOATS = 64  # 256 bytes: TensorRT takes tensor addresses aligned to 256 bytes
SIGMA_MIN = 1e-5  # the continuation σ_min solver_step is exported with (audiocraft solvers/jasco.py `_z`)
Cancel = tp.Callable[[], bool]


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

    def solve(self, settings: SolverSettings, z0: np.ndarray, callback: tp.Optional[Callback] = None,
              cancel: tp.Optional[Cancel] = None, loop_traffic: tp.Optional[Traffic] = None) -> ODEResult:
        """Integrate from ``z0`` [P, T, D] (float32); ``callback(nfe, total)`` after each evaluation, ``cancel()``
        before each one.  ``loop_traffic`` gets what the evaluations (not the set-up) copied and allocated."""
        z0 = np.ascontiguousarray(z0, np.float32)
        if not np.isfinite(z0).all():
            raise ValueError("z0 contains non-finite values (NaN or inf)")
        schedule = stage_evaluations(settings, np.float32)
        P, n = self.prompts, self.terms
        if z0.shape[0] != P:
            raise ValueError(f"z0 has {z0.shape[0]} prompts, the conditions {P}")
        with self.flow.workspace() as ws:
            arrays = self._arrays(ws, z0, schedule)
            try:
                z = self._loop(ws, arrays, schedule, callback, cancel, loop_traffic)
            finally:
                arrays.clear()  # no view of an OrtValue outlives the workspace (a traceback keeps this frame)
        if not np.isfinite(z).all():
            raise SolverError("the state became non-finite: the vector field returned NaN/inf or the steps are too large")
        return ODEResult(z=z, nfe=len(schedule), n_steps=int(settings.steps))

    def _loop(self, ws: Workspace, arrays: tp.Dict[str, tp.Any], schedule: tp.Sequence[StageEvaluation],
              callback: tp.Optional[Callback], cancel: tp.Optional[Cancel],
              loop_traffic: tp.Optional[Traffic]) -> np.ndarray:
        """The evaluations; each is waited for (a stream synchronisation, no copy) before its progress tick and the
        next cancellation check, so progress is work done and a cancelled solve stops within one evaluation."""
        engines = (self.flow, self.step)
        before = [e.traffic.copy() for e in engines]
        cur = 0
        for e, ev in enumerate(schedule):
            if cancel is not None and cancel():
                raise Cancelled("the generation was cancelled (the request timed out or the client went away)")
            self._evaluate(ws, arrays, e, ev, cur)
            cur ^= int(ev.ends_step)
            ws.synchronize()
            if callback is not None:
                callback(e + 1, len(schedule))
        if loop_traffic is not None:
            for engine, b in zip(engines, before):
                spent = engine.traffic.since(b)
                loop_traffic.h2d += spent.h2d
                loop_traffic.d2h += spent.d2h
                loop_traffic.allocations += spent.allocations
        return ws.download(arrays["base"][cur])

    # -- set-up: everything the loop touches, allocated and uploaded once ---------------------------------------
    def _arrays(self, ws: Workspace, z0: np.ndarray, schedule: tp.Sequence[StageEvaluation]) -> tp.Dict[str, tp.Any]:
        P, n = self.prompts, self.terms
        state = z0.shape
        rows = (P, n) + state[1:]
        widest = max(s.stop - s.start for s in self.flow_chunks)
        t_sched = np.zeros((len(schedule), _aligned(widest)), np.float32)
        c_sched = np.zeros((len(schedule), ALIGN_FLOATS), np.float32)
        for e, ev in enumerate(schedule):
            t_sched[e] = ev.t
            t_next = schedule[e + 1].t if e + 1 < len(schedule) else 1.0  # the time the next rows are seen at
            c_sched[e, :3] = (ev.c_prev, ev.c_new, t_next)
        keep, fixed = np.zeros(state[:2] + (1,), np.float32), {k: np.zeros(state, np.float32)
                                                                for k in ("velocity", "noise", "known")}
        first = z0
        if self.constraint is not None:
            f = self.constraint.frames
            keep[:, :f] = 1
            for k in fixed:
                fixed[k][:, :f] = getattr(self.constraint, k)
            first = z0.copy()
            first[:, :f] = self.constraint.path(schedule[0].t)
        return {
            "continuation": [{"keep": ws.upload(keep[s]), **{k: ws.upload(v[s]) for k, v in fixed.items()}}
                             for s in self.step_chunks],
            "conditions": [{k: ws.upload(v[s]) for k, v in self.feeds.items()} for s in self.flow_chunks],
            "weights": [ws.upload(self.weights[s]) for s in self.step_chunks],  # own arrays: 256-byte aligned
            "z_rows": ws.upload(np.broadcast_to(first[:, None], rows)),  # the first evaluation's rows
            "v_rows": ws.empty(rows),
            "base": [ws.upload(z0), ws.empty(state)],  # the step's start state, and the next one's
            "first": ws.empty(state),  # a two-stage step's first derivative
            "zero": ws.upload(np.zeros(state, np.float32)),  # k_prev of a stage that adds one derivative
            "stage": ws.empty(state),  # a stage input that does not end its step
            "scratch": ws.empty(state),  # v that no later stage reads
            "t": ws.upload(t_sched), "c": ws.upload(c_sched),
        }

    @staticmethod
    def _row(array: DeviceArray, e: int, n: int) -> DeviceArray:
        """The first ``n`` values of row ``e`` of a padded schedule (256-byte aligned rows)."""
        return array.rows(slice(e, e + 1)).head(n)

    def _evaluate(self, ws: Workspace, a: tp.Dict[str, tp.Any], e: int, ev: StageEvaluation, cur: int) -> None:
        rows = self.prompts * self.terms  # [P, n, T, D] as the flow step's rows
        z_rows, v_rows = (a[k].reshape(rows, *a[k].shape[2:]) for k in ("z_rows", "v_rows"))
        for s, conditions in zip(self.flow_chunks, a["conditions"]):
            t = self._row(a["t"], e, s.stop - s.start)
            self.flow.run_device({"z": z_rows.rows(s), "t": t, **conditions}, {"v": v_rows.rows(s)}, ws)
        c = self._row(a["c"], e, 3)
        base = a["base"][cur]
        k_prev = a["first"] if ev.uses_first else a["zero"]
        z_out = a["base"][cur ^ 1] if ev.ends_step else a["stage"]
        v_out = a["first"] if ev.keeps_first else a["scratch"]
        for s, weights, fixed in zip(self.step_chunks, a["weights"], a["continuation"]):
            self.step.run_device(
                {"v_rows": a["v_rows"].rows(s), "weights": weights, "base": base.rows(s),
                 "k_prev": k_prev.rows(s), "c": c, **fixed},
                {"v": v_out.rows(s), "z": z_out.rows(s), "z_rows": a["z_rows"].rows(s)}, ws)


def device_solver_available(flow: Engine, step: tp.Optional[Engine], settings: SolverSettings) -> tp.Optional[str]:
    """None when a solve with ``settings`` can keep its state on the device, else why not (one phrase)."""
    if step is None:
        return "the export has no solver_step graph (exported before it existed: re-export)"
    if not settings.fixed_step:
        return "dopri5 adapts its steps on the host"
    if flow.device != step.device or type(flow) is not type(step):
        return f"flow_step ({type(flow).__name__}) and solver_step ({type(step).__name__}) run on different backends"
    return None

