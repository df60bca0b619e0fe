"""The one owner of a solve: initial noise, the guided vector field over the flow-step engine (with its device
buffers), solver dispatch, progress, cancellation, decoding, the finite check, timings and the result.

Single clips (:mod:`jasco_runtime.pipeline`), the window loop of long songs (:mod:`jasco_runtime.longform`) and
grouped batched solves (:mod:`jasco_runtime.batching`) are planners over :class:`GenerationCore`; none of them calls
an engine, a solver or tqdm itself.

The vector field is two functions (audiocraft models/flow_matching.py ``estimated_vector_field``): the engine call
over the term-major rows of every member of a solve, then each member's CFG combination with its own terms
(:func:`guidance.combine_vector_fields`).  A solve's device copies of the conditions are owned by the
:meth:`GenerationCore.guided_field` context manager and freed on every path (exceptions, SIGTERM, cancellation).

On a GPU backend a solve of the core's guided field runs as a loop on the device (:mod:`jasco_runtime.device_solve`:
the CFG sum, the stage updates, dopri5's error norm and a long song's continuation in the exported ``solver_step``
graph; fixed steps copy 0 host↔device bytes per evaluation, dopri5 its step plan and error norm per step); a field
the caller replaced or wrapped, and an export without (or with an older) ``solver_step``, solve on the host.
``GenerationCore.device_loop``: None (default) uses the device loop where the flow step runs on a GPU, True
everywhere it can run (tests run it on the CPU), False never.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import typing as tp
from dataclasses import dataclass, field

import numpy as np

from . import separation
from .backends.base import Traffic, bound_chunks
from .device_solve import Constraint, DeviceSolve, device_solver_available
from .conditioning import Conditions, ConditionProvider, PreparedRequest, WindowInputs
from .errors import Cancelled, JascoError
from .export_folder import ExportFolder
from .guidance import CFGTerm, combine_vector_fields
from .solvers import ODEResult, SolverSettings, VectorField, solve
from .timing import Stopwatch

if tp.TYPE_CHECKING:  # pragma: no cover
    from .engine_set import EngineSet
    from .longform import WindowResult

logger = logging.getLogger(__name__)
SEED_RANGE = 2 ** 31  # seeds drawn for a request that gave none: small enough to type back
Cancel = tp.Callable[[], bool]
RowsField = tp.Callable[[float, np.ndarray], np.ndarray]


def draw_seed() -> int:
    """A seed for a request that gave none (reported back, so the clip can be generated again)."""
    return secrets.randbelow(SEED_RANGE)


@dataclass
class GenerationResult:
    audio: np.ndarray  # [B, 1, samples] float32
    latents: np.ndarray  # [B, T, D] normalized latents
    sample_rate: int
    nfe: int
    timings: tp.Dict[str, float] = field(default_factory=dict)
    terms: tp.List[CFGTerm] = field(default_factory=list)
    windows: tp.List["WindowResult"] = field(default_factory=list)  # songs > 1 window: each window
    seed: tp.Optional[int] = None  # the seed of the initial noise (drawn when the request gave none)
    traffic: tp.Dict[str, float] = field(default_factory=dict)  # ODE loop host↔device bytes / allocations per NFE
    ode_loop: str = "host"  # where the ODE state lived: "device" (every solve) or "host"


@dataclass(frozen=True, eq=False)
class Member:
    """One request's part of a solve: its window's conditions (term-major rows) and its CFG terms."""

    conditions: Conditions
    terms: tp.Sequence[CFGTerm]
    batch: int  # prompts


def _term_major(members: tp.Sequence[Member], pick: tp.Callable[[Conditions], np.ndarray]) -> np.ndarray:
    """Rows of every member re-ordered term-major over the whole solve: term i of all prompts, then i + 1."""
    if len(members) == 1:
        return pick(members[0].conditions)
    n = len(members[0].terms)
    parts = [pick(m.conditions)[i * m.batch:(i + 1) * m.batch] for i in range(n) for m in members]
    return np.concatenate(parts, axis=0)


class GuidedField:
    """The guided vector field of one solve: callable ``f(t, z)`` on host arrays (the flow step's conditions bound
    to its device on first use, for the block of :meth:`GenerationCore.guided_field`), or solved as a whole on
    the device by :meth:`GenerationCore.solve`."""

    def __init__(self, core: "GenerationCore", members: tp.Sequence[Member], stack: contextlib.ExitStack):
        n = len(members[0].terms)
        if any(len(m.terms) != n for m in members):
            raise ValueError("members of one solve must have the same number of CFG terms")
        self.core, self.members, self.n_terms, self._stack = core, list(members), n, stack
        self.conditions = Conditions(_term_major(members, lambda c: c.text),
                                     {k: _term_major(members, lambda c, k=k: c.temporal[k])
                                      for k in members[0].conditions.temporal})
        self._rows: tp.Optional[RowsField] = None

    def bind(self) -> None:
        """Bind the conditions for host evaluations (once)."""
        if self._rows is None:
            self._rows = self._stack.enter_context(self.core.rows_field(self.conditions))

    def weights(self) -> np.ndarray:
        """[ΣB, n] each prompt's CFG weight per term (a single term is unweighted: 1)."""
        rows = [[t.weight for t in m.terms] if self.n_terms > 1 else [1.0] for m in self.members for _ in range(m.batch)]
        return np.asarray(rows, np.float32)

    def __call__(self, t: float, z: np.ndarray) -> np.ndarray:
        self.bind()
        members, n = self.members, self.n_terms
        v = self._rows(t, np.concatenate([z] * n, axis=0) if n > 1 else z)  # [n·ΣB, T, D], term-major
        if len(members) == 1:
            return combine_vector_fields(v, list(members[0].terms))
        total = sum(m.batch for m in members)
        out, o = [], 0
        for m in members:
            own = np.concatenate([v[i * total + o:i * total + o + m.batch] for i in range(n)], axis=0)
            out.append(combine_vector_fields(own, list(m.terms)))
            o += m.batch
        return np.concatenate(out, axis=0)


class GenerationCore:
    """An export folder's engines and condition provider, and everything one solve does with them."""

    def __init__(self, folder: ExportFolder, engines: "EngineSet", conditioner: ConditionProvider,
                 device_loop: tp.Optional[bool] = None):
        self.folder = folder
        self.engines = engines
        self.conditioner = conditioner
        self.device_loop = device_loop  # module docstring

    # -- inputs ----------------------------------------------------------------------------------------------
    def encode(self, window: WindowInputs, terms: tp.Sequence[CFGTerm],
               timings: tp.Optional[tp.Dict[str, float]] = None) -> Conditions:
        return self.conditioner.encode(window, terms, self.engines, timings)

    def separate(self, prepared: PreparedRequest, timings: tp.Optional[tp.Dict[str, float]] = None) -> PreparedRequest:
        """audiocraft separates every drums input with htdemucs before EnCodec (modules/jasco_conditioners.py
        ``_get_drums_stem``): with the export's ``drums_separator`` graph, once per request (a long song: once for
        the whole stem, then sliced per window), unless the request says its drums are a stem already."""
        if prepared.song_drums is None:
            return prepared
        drums = separation.separate_prepared(self.folder, self.engines, prepared.song_drums,
                                             prepared.request.drums_stem, timings)
        return prepared if drums is prepared.song_drums else prepared.with_song_drums(drums)

    def initial_noise(self, prepared: PreparedRequest) -> tp.Tuple[np.ndarray, tp.Optional[int]]:
        """z0 [B, N, D] (N: one window, or the song's frames) and its seed: the request's noise, else a draw from
        its seed, else from a seed drawn here (reported in the result)."""
        req = prepared.request
        if req.init_noise is not None:
            return req.init_noise, None
        plan = prepared.plan
        n = plan.n_frames if plan.n_windows > 1 else self.folder.n_frames
        seed = draw_seed() if req.seed is None else int(req.seed)
        shape = (len(req.prompts), n, self.folder.latent_dim)
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32), seed

    # -- the vector field ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def rows_field(self, conditions: Conditions) -> tp.Iterator[RowsField]:
        """v(t, z_rows) of the flow step over every row of ``conditions``.  The conditions are bound to the
        engine's device once for the block, in chunks of the engine's own profile (:func:`bound_chunks`), and
        freed when it ends; each evaluation runs the chunks with z and t only."""
        engine = self.engines["flow_step"]
        with bound_chunks(engine, conditions.feeds()) as chunks:
            def rows(t: float, z: np.ndarray) -> np.ndarray:
                tt = np.full((z.shape[0],), t, dtype=np.float32)
                parts = [engine.run({"z": z[s], "t": tt[s], **bound})["v"] for s, bound in chunks]
                return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

            yield rows

    @contextlib.contextmanager
    def guided_field(self, members: tp.Sequence[Member]) -> tp.Iterator[GuidedField]:
        """The guided vector field of a solve of one or more members (same number of CFG terms): z [ΣB, T, D] is
        repeated per term, one engine call covers every row, each member combines its own rows with its own
        weights.  Device buffers live for the block."""
        with contextlib.ExitStack() as stack:
            yield GuidedField(self, members, stack)

    def device_loop_for(self, f: VectorField, settings: SolverSettings) -> tp.Optional[str]:
        """None when this solve runs on the device (:mod:`jasco_runtime.device_solve`), else why it does not."""
        flow = self.engines["flow_step"]
        if self.device_loop is False or (self.device_loop is None and flow.device == "cpu"):
            return "the flow step runs on the host"
        if not isinstance(f, GuidedField):
            return "the vector field is not the core's guided field (replaced or wrapped by the caller)"
        graph = self.folder.graphs.get("solver_step")
        terms = graph.profile.get("terms") if graph is not None else None
        return device_solver_available(flow, self.engines.get("solver_step"), settings, terms=f.n_terms,
                                       max_terms=terms.max if terms is not None else None,
                                       frame_bytes=self.folder.n_frames * self.folder.latent_dim * 4)

    # -- solve, decode ---------------------------------------------------------------------------------------
    def solve(self, settings: SolverSettings, f: VectorField, z0: np.ndarray,
              progress: tp.Optional[tp.Callable[[], None]] = None, cancel: tp.Optional[Cancel] = None,
              timings: tp.Optional[tp.Dict[str, float]] = None, traffic: tp.Optional[Traffic] = None,
              constraint: tp.Optional[Constraint] = None) -> ODEResult:
        """One ODE solve; ``progress()`` after each evaluation; ``cancel()`` is asked before each one and a True
        ends the solve with :class:`Cancelled` (the field's buffers are freed by its block).  ``traffic``: adds
        what the loop copied between host and device during the solve.  ``constraint``: a continued long-song
        window (the host loop wraps the field with it; the device loop's solver_step applies it)."""
        def callback(nfe: int, estimate: int) -> None:
            if progress is not None:
                progress()

        why_not = self.device_loop_for(f, settings)
        if why_not is None:
            assert isinstance(f, GuidedField)
            flow, step = self.engines["flow_step"], self.engines["solver_step"]
            loop = Traffic()
            setup = [e.traffic.copy() for e in (flow, step)]
            with Stopwatch(timings)("flow"):
                res = DeviceSolve(flow, step, f.conditions.feeds(), f.weights(), constraint).solve(
                    settings, z0, callback=callback, cancel=cancel, loop_traffic=loop)
            if traffic is not None:
                spent = [e.traffic.since(b) for e, b in zip((flow, step), setup)]
                traffic.add(loop, once=Traffic(sum(x.h2d for x in spent) - loop.h2d, sum(x.d2h for x in spent) - loop.d2h,
                                               sum(x.allocations for x in spent) - loop.allocations), device=True)
        else:
            if self.device_loop is not False and self.engines["flow_step"].device != "cpu":
                logger.info("the ODE state stays on the host for this solve: %s", why_not)
            if isinstance(f, GuidedField):
                f.bind()  # the conditions' copy is the solve's set-up, not part of its evaluations
            if constraint is not None:
                f = constraint.wrap(f)
            engine = self.engines["flow_step"]
            before = engine.traffic.copy()

            def checked(t: float, z: np.ndarray) -> np.ndarray:
                if cancel is not None and cancel():
                    raise Cancelled("the generation was cancelled (the request timed out or the client went away)")
                return f(t, z)

            with Stopwatch(timings)("flow"):
                res = solve(settings, checked if cancel is not None else f, z0, callback=callback)
            if traffic is not None:
                traffic.add(engine.traffic.since(before), device=False)
        if timings is not None:
            timings["nfe"] = timings.get("nfe", 0) + res.nfe
            timings["flow_per_eval"] = timings["flow"] / max(timings["nfe"], 1)
        return res

    def decode(self, latents: np.ndarray, timings: tp.Optional[tp.Dict[str, float]] = None) -> np.ndarray:
        """Latents [B, N, D] → audio [B, 1, N · samples per frame] with the EnCodec decoder graph."""
        with Stopwatch(timings)("decoder"):
            return self.engines.run("encodec_decoder", {"latents": latents.astype(np.float32)})["audio"]

    def check_finite(self, latents: np.ndarray, audio: np.ndarray) -> None:
        for what, x in (("latents", latents), ("audio", audio)):
            if not np.isfinite(x).all():
                raise JascoError(f"the generation produced non-finite {what} (NaN/Inf); nothing was written — check "
                                 f"the artifacts with `jasco-run verify {self.folder.folder}`")

    @contextlib.contextmanager
    def progress(self, enabled: bool, total: tp.Optional[int], desc: str) -> tp.Iterator[tp.Optional[tp.Callable[[], None]]]:
        """A tqdm bar counting vector-field evaluations (``unit="nfe"``) on a terminal, or None when disabled."""
        if not enabled:
            yield None
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="nfe", desc=desc)
        try:
            yield lambda: bar.update(1)
        finally:
            bar.close()

    def result(self, prepared: PreparedRequest, audio: np.ndarray, latents: np.ndarray, nfe: int,
               timings: tp.Dict[str, float], seed: tp.Optional[int],
               windows: tp.Optional[tp.List["WindowResult"]] = None,
               traffic: tp.Optional[Traffic] = None) -> GenerationResult:
        timings.pop("nfe", None)
        per_nfe = {} if traffic is None else traffic.report(nfe)
        loop = "device" if traffic is not None and traffic.solves and traffic.device_solves == traffic.solves else "host"
        return GenerationResult(audio=audio, latents=latents, sample_rate=self.folder.sample_rate, nfe=nfe,
                                timings=timings, terms=list(prepared.terms), windows=list(windows or []), seed=seed,
                                traffic=per_nfe, ode_loop=loop)
