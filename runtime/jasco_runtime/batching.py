"""Several generation requests in one ODE solve, each with the result it would get alone.

A server batches concurrent requests (``jasco-serve``): requests that can share a solve run as one batch of
prompts whose flow-step rows are term-major over *all* prompts (row ``i·B + j`` = CFG term ``i``, prompt
``j``, as in audiocraft/models/flow_matching.py ``_multi_source_cfg_preprocess``), chunked to the engine's
profile by the pipeline. Each request keeps its own conditions (chords, drums, melody, text — computed by
:meth:`JascoPipeline.conditions` exactly as for a request alone), its own initial noise (seed) and its own
CFG weights (its rows are combined by :func:`guidance.combine_vector_fields` with its own terms).

Requests share a solve only when that cannot change their results:

* same fixed-step solver and step count — Euler/midpoint/heun update each row on its own, while dopri5's
  step-size control takes one RMS norm over the whole state (torchdiffeq ``_rms_norm``), so a dopri5
  request always runs alone;
* same CFG term kinds (:func:`guidance.cfg_terms` may keep 1, 2 or 3 terms) — weights may differ;
* same conditioner presence (chords / drums / melody given or not);
* same padded text length: a request's prompts are tokenized together and padded to its longest, and the
  flow step's cross-attention has no key mask, so the padded length changes the output (BEHAVIOUR.md §7) —
  prompts of other token counts cannot join its rows without changing its result;
* one window only: a request whose ``duration`` is not the model's window runs alone.
"""
from __future__ import annotations

import time
import typing as tp
from dataclasses import dataclass

import numpy as np

from .errors import InputError, JascoError
from .guidance import CFGTerm, cfg_terms, combine_vector_fields
from .request import GenerationRequest
from .solvers import SOLVERS

if tp.TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Conditions, GenerationResult, JascoPipeline

Outcome = tp.Union["GenerationResult", JascoError]
# one term of weight 1: pipeline.vector_field then evaluates the rows it is given as they are
# (no copies of z per term; combine_vector_fields returns a single term's field unweighted)
_ROWS_AS_GIVEN = [CFGTerm("all", 1.0)]


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to run in one solve."""

    solver: str
    steps: int
    terms: tp.Tuple[str, ...]  # CFG term kinds, in batch order
    text_tokens: int  # padded T5 length of the request's prompts
    chords: bool
    drums: bool
    melody: bool


def batch_key(pipe: "JascoPipeline", req: GenerationRequest) -> tp.Optional[BatchKey]:
    """The key of a resolved request, or ``None`` when it must run alone (dopri5, longer than one window)."""
    if req.solver == "dopri5" or req.steps is None:
        return None
    if req.duration is not None and abs(req.duration - pipe.manifest.duration) > 1e-9:
        return None  # windowed (longer) or trimmed (shorter) generation: its own path
    kinds = tuple(t.kind for t in cfg_terms(req.cfg_coef_all, req.cfg_coef_txt))
    ids, _ = pipe.tokenizer(req.prompts)  # rows of dropped descriptions ('</s>', 1 token) never set the length
    return BatchKey(req.solver, int(req.steps), kinds, int(ids.shape[1]), _given(req.chords), req.drums is not None,
                    req.melody is not None)


def _given(chords: tp.Any) -> bool:
    return chords is not None and (isinstance(chords, (str, bytes)) or len(chords) > 0)


def group_requests(pipe: "JascoPipeline", reqs: tp.Sequence[GenerationRequest],
                   max_prompts: tp.Optional[int] = None) -> tp.List[tp.List[int]]:
    """Indices of ``reqs`` grouped into solves, in arrival order of each group's first request; a group
    holds at most ``max_prompts`` prompts (a request with more runs in a group of its own)."""
    groups: tp.List[tp.List[int]] = []
    open_groups: tp.Dict[BatchKey, int] = {}
    for i, req in enumerate(reqs):
        key = batch_key(pipe, req)
        g = open_groups.get(key) if key is not None else None
        if g is not None and (max_prompts is None
                              or sum(len(reqs[j].prompts) for j in groups[g]) + len(req.prompts) <= max_prompts):
            groups[g].append(i)
            continue
        groups.append([i])
        if key is not None:
            open_groups[key] = len(groups) - 1
    return groups


def generate_batch(pipe: "JascoPipeline", reqs: tp.Sequence[GenerationRequest],
                   max_prompts: tp.Optional[int] = None) -> tp.List[Outcome]:
    """Run resolved requests (``GenerationRequest.resolved``), batching those that can share a solve.

    Returns one outcome per request, in order: its :class:`GenerationResult` (``timings['batch_prompts']``:
    prompts in its solve), or the :class:`JascoError` it raised — one bad request does not fail the others.
    """
    out: tp.List[tp.Optional[Outcome]] = [None] * len(reqs)
    for group in group_requests(pipe, reqs, max_prompts):
        for i, outcome in zip(group, solve_group(pipe, [reqs[i] for i in group])):
            out[i] = outcome
    return tp.cast(tp.List[Outcome], out)


def solve_group(pipe: "JascoPipeline", reqs: tp.Sequence[GenerationRequest]) -> tp.List[Outcome]:
    """One group of :func:`group_requests`: a request that must run alone goes through
    :meth:`JascoPipeline.run`, the others share one solve."""
    if len(reqs) == 1 and batch_key(pipe, reqs[0]) is None:
        try:
            res = pipe.run(reqs[0], progress=False)
        except JascoError as exc:
            return [exc]
        res.timings["batch_prompts"] = len(reqs[0].prompts)
        return [res]
    return _solve_together(pipe, reqs)


@dataclass
class _Member:
    """One request inside a shared solve."""

    req: GenerationRequest
    terms: tp.List[CFGTerm]
    conditions: "Conditions"
    noise: np.ndarray  # [B_r, T, D]
    timings: tp.Dict[str, float]
    offset: int = 0  # first prompt of this request in the batch


def _prepare(pipe: "JascoPipeline", req: GenerationRequest) -> _Member:
    """The request's conditions and noise, computed as :meth:`JascoPipeline.run` computes them."""
    timings: tp.Dict[str, float] = {}
    terms = cfg_terms(req.cfg_coef_all, req.cfg_coef_txt)
    frames = pipe._frames(req.chords)
    drums = pipe._drums(req.drums, req.drums_sample_rate, stem=req.drums_stem)
    melody = pipe._melody(req.melody)
    B, T, D = len(req.prompts), pipe.manifest.n_frames, pipe.manifest.latent_dim
    noise = req.init_noise
    if noise is not None and noise.shape != (B, T, D):
        raise InputError(f"init noise must be [{B}, {T}, {D}] for {B} prompt(s), got {list(noise.shape)}")
    conds = pipe.conditions(req.prompts, terms, frames, drums, melody, timings)
    if noise is None:
        noise = np.random.default_rng(req.seed).standard_normal((B, T, D)).astype(np.float32)
    return _Member(req, terms, conds, noise, timings)


def _term_major(members: tp.Sequence[_Member], n_terms: int, pick: tp.Callable[[_Member], np.ndarray]) -> np.ndarray:
    """Rows of every member re-ordered term-major over the whole batch: term i of all prompts, then i + 1."""
    parts = []
    for i in range(n_terms):
        for m in members:
            b = len(m.req.prompts)
            parts.append(pick(m)[i * b:(i + 1) * b])
    return np.concatenate(parts, axis=0)


def _solve_together(pipe: "JascoPipeline", reqs: tp.Sequence[GenerationRequest]) -> tp.List[Outcome]:
    from .pipeline import Conditions, GenerationResult

    start = time.perf_counter()
    outcomes: tp.List[tp.Optional[Outcome]] = [None] * len(reqs)
    members: tp.List[_Member] = []
    slots: tp.List[int] = []
    for k, req in enumerate(reqs):
        try:
            members.append(_prepare(pipe, req))
            slots.append(k)
        except JascoError as exc:  # this request's input is bad: the others still run
            outcomes[k] = exc
    if not members:
        return tp.cast(tp.List[Outcome], outcomes)
    offset = 0
    for m in members:
        m.offset = offset
        offset += len(m.req.prompts)
    B, n = offset, len(members[0].terms)
    conds = Conditions(_term_major(members, n, lambda m: m.conditions.text),
                       {name: _term_major(members, n, lambda m, name=name: m.conditions.temporal[name])
                        for name in members[0].conditions.temporal})
    rows_field = pipe.vector_field(conds, _ROWS_AS_GIVEN)

    def field(t: float, z: np.ndarray) -> np.ndarray:
        v = rows_field(t, np.concatenate([z] * n, axis=0) if n > 1 else z)  # [n·B, T, D], term-major
        guided = []
        for m in members:
            b, o = len(m.req.prompts), m.offset
            own = np.concatenate([v[i * B + o:i * B + o + b] for i in range(n)], axis=0) if n > 1 else v[o:o + b]
            guided.append(combine_vector_fields(own, m.terms))
        return np.concatenate(guided, axis=0)

    req0 = members[0].req
    flow_start = time.perf_counter()
    res = SOLVERS[req0.solver](field, np.concatenate([m.noise for m in members], axis=0), req0.steps)
    flow = time.perf_counter() - flow_start
    dec_start = time.perf_counter()
    audio = pipe._run_chunked("encodec_decoder", {"latents": res.z.astype(np.float32)}, "audio")
    decoder = time.perf_counter() - dec_start
    total = time.perf_counter() - start
    for k, m in zip(slots, members):
        sl = slice(m.offset, m.offset + len(m.req.prompts))
        z, clip = res.z[sl], audio[sl]
        bad = next((what for what, x in (("latents", z), ("audio", clip)) if not np.isfinite(x).all()), None)
        if bad is not None:
            outcomes[k] = JascoError(f"the generation produced non-finite {bad} (NaN/Inf) — check the artifacts "
                                     f"with `jasco-run verify {pipe.manifest.folder}`")
            continue
        timings = dict(m.timings, flow=flow, flow_per_eval=flow / max(res.nfe, 1), decoder=decoder, total=total,
                       batch_prompts=B)
        outcomes[k] = GenerationResult(audio=clip, latents=z, sample_rate=pipe.manifest.sample_rate, nfe=res.nfe,
                                       timings=timings, terms=list(m.terms))
    return tp.cast(tp.List[Outcome], outcomes)
