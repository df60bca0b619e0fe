"""The one owner of a solve: initial noise, the guided vector field over the flow-step engine (with its device
buffers), solver dispatch, progress, cancellation, decoding, the finite check, timings and the result.

Single clips (:mod:`jasco_runtime.pipeline`), the window loop of long songs (:mod:`jasco_runtime.longform`) and
grouped batched solves (:mod:`jasco_runtime.batching`) are planners over :class:`GenerationCore`; none of them calls
an engine, a solver or tqdm itself.

The vector field is two functions (audiocraft models/flow_matching.py ``estimated_vector_field``): the engine call
over the term-major rows of every member of a solve, then each member's CFG combination with its own terms
(:func:`guidance.combine_vector_fields`).  A solve's device copies of the conditions are owned by the
:meth:`GenerationCore.guided_field` context manager and freed on every path (exceptions, SIGTERM, cancellation).
"""
from __future__ import annotations

import contextlib
import secrets
import typing as tp
from dataclasses import dataclass, field

import numpy as np

from . import separation
from .backends.base import Traffic, bound_chunks
from .conditioning import Conditions, ConditionProvider, PreparedRequest, WindowInputs
from .errors import JascoError
from .export_folder import ExportFolder
from .guidance import CFGTerm, combine_vector_fields
from .solvers import ODEResult, SolverSettings, VectorField, solve
from .timing import Stopwatch

if tp.TYPE_CHECKING:  # pragma: no cover
    from .engine_set import EngineSet
    from .longform import WindowResult

SEED_RANGE = 2 ** 31  # seeds drawn for a request that gave none: small enough to type back
Cancel = tp.Callable[[], bool]
RowsField = tp.Callable[[float, np.ndarray], np.ndarray]


def draw_seed() -> int:
    """A seed for a request that gave none (reported back, so the clip can be generated again)."""
    return secrets.randbelow(SEED_RANGE)


class Cancelled(JascoError):
    """The caller cancelled the generation (a timed-out or disconnected request)."""


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
    traffic: tp.Dict[str, float] = field(default_factory=dict)  # flow-step host↔device bytes / allocations per NFE


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


class GenerationCore:
    """An export folder's engines and condition provider, and everything one solve does with them."""

    def __init__(self, folder: ExportFolder, engines: "EngineSet", conditioner: ConditionProvider):
        self.folder = folder
        self.engines = engines
        self.conditioner = conditioner

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
    def guided_field(self, members: tp.Sequence[Member]) -> tp.Iterator[VectorField]:
        """The guided vector field of a solve of one or more members (same number of CFG terms): z [ΣB, T, D] is
        repeated per term, one engine call covers every row, each member combines its own rows with its own
        weights.  Device buffers live for the block."""
        n = len(members[0].terms)
        if any(len(m.terms) != n for m in members):
            raise ValueError("members of one solve must have the same number of CFG terms")
        total = sum(m.batch for m in members)
        conditions = Conditions(_term_major(members, lambda c: c.text),
                                {k: _term_major(members, lambda c, k=k: c.temporal[k])
                                 for k in members[0].conditions.temporal})
        offsets = np.cumsum([0] + [m.batch for m in members])[:-1]
        with self.rows_field(conditions) as rows:
            def guided(t: float, z: np.ndarray) -> np.ndarray:
                v = rows(t, np.concatenate([z] * n, axis=0) if n > 1 else z)  # [n·ΣB, T, D], term-major
                if len(members) == 1:
                    return combine_vector_fields(v, list(members[0].terms))
                out = []
                for m, o in zip(members, offsets):
                    own = np.concatenate([v[i * total + o:i * total + o + m.batch] for i in range(n)], axis=0)
                    out.append(combine_vector_fields(own, list(m.terms)))
                return np.concatenate(out, axis=0)

            yield guided

    # -- solve, decode ---------------------------------------------------------------------------------------
    def solve(self, settings: SolverSettings, f: VectorField, z0: np.ndarray,
              progress: tp.Optional[tp.Callable[[], None]] = None, cancel: tp.Optional[Cancel] = None,
              timings: tp.Optional[tp.Dict[str, float]] = None, traffic: tp.Optional[Traffic] = None) -> ODEResult:
        """One ODE solve; ``progress()`` after each evaluation; ``cancel()`` is asked before each one and a True
        ends the solve with :class:`Cancelled` (the field's buffers are freed by its block).  ``traffic``: adds
        what the flow step copied between host and device during the solve."""
        engine = self.engines["flow_step"]
        before = engine.traffic.copy()
        def callback(nfe: int, estimate: int) -> None:
            if progress is not None:
                progress()

        def checked(t: float, z: np.ndarray) -> np.ndarray:
            if cancel is not None and cancel():
                raise Cancelled("the generation was cancelled (the request timed out or the client went away)")
            return f(t, z)

        with Stopwatch(timings)("flow"):
            res = solve(settings, checked if cancel is not None else f, z0, callback=callback)
        if traffic is not None:
            spent = engine.traffic.since(before)
            traffic.h2d, traffic.d2h = traffic.h2d + spent.h2d, traffic.d2h + spent.d2h
            traffic.allocations += spent.allocations
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
        per_nfe = {} if traffic is None else {"h2d_bytes_per_nfe": traffic.h2d / max(nfe, 1),
                                              "d2h_bytes_per_nfe": traffic.d2h / max(nfe, 1),
                                              "allocations_per_nfe": traffic.allocations / max(nfe, 1)}
        return GenerationResult(audio=audio, latents=latents, sample_rate=self.folder.sample_rate, nfe=nfe,
                                timings=timings, terms=list(prepared.terms), windows=list(windows or []), seed=seed,
                                traffic=per_nfe)
