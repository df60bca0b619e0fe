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

import typing as tp
from dataclasses import dataclass

import numpy as np

from .backends.base import Traffic
from .conditioning import PreparedRequest
from .errors import JascoError
from .generation import Cancelled, GenerationResult, Member
from .request import ResolvedRequest
from .timing import clock

if tp.TYPE_CHECKING:  # pragma: no cover
    from .pipeline import JascoPipeline

Outcome = tp.Union[GenerationResult, JascoError]
Request = tp.Union[ResolvedRequest, PreparedRequest, JascoError]  # an error: a request that failed to prepare


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


def batch_key(prepared: PreparedRequest) -> tp.Optional[BatchKey]:
    """The key of a prepared request, or ``None`` when it must run alone (dopri5, not exactly one window)."""
    req, plan = prepared.request, prepared.plan
    if not req.settings.fixed_step or req.steps is None:
        return None
    if plan.n_windows != 1 or plan.n_samples != plan.window_samples:
        return None  # windowed (longer) or trimmed (shorter) generation: its own path
    w = prepared.windows[0]
    return BatchKey(req.solver, int(req.steps), tuple(t.kind for t in prepared.terms), prepared.text_tokens,
                    w.chords is not None, w.drums is not None, w.melody is not None)


def _prepare_all(pipe: "JascoPipeline", reqs: tp.Sequence[Request]) -> tp.List[tp.Union[PreparedRequest, JascoError]]:
    out: tp.List[tp.Union[PreparedRequest, JascoError]] = []
    for r in reqs:
        try:
            out.append(r if isinstance(r, (PreparedRequest, JascoError)) else pipe.prepare(r))
        except JascoError as exc:  # this request's input is bad: the others still run
            out.append(exc)
    return out


def group_requests(pipe: "JascoPipeline", reqs: tp.Sequence[Request],
                   max_prompts: tp.Optional[int] = None) -> tp.List[tp.List[int]]:
    """Indices of ``reqs`` grouped into solves, in arrival order of each group's first request; a group
    holds at most ``max_prompts`` prompts (a request with more runs in a group of its own)."""
    prepared = _prepare_all(pipe, reqs)
    groups: tp.List[tp.List[int]] = []
    open_groups: tp.Dict[BatchKey, int] = {}
    for i, p in enumerate(prepared):
        key = batch_key(p) if isinstance(p, PreparedRequest) else None
        g = open_groups.get(key) if key is not None else None
        if g is not None and (max_prompts is None
                              or sum(_prompts(prepared[j]) for j in groups[g]) + _prompts(p) <= max_prompts):
            groups[g].append(i)
            continue
        groups.append([i])
        if key is not None:
            open_groups[key] = len(groups) - 1
    return groups


def _prompts(r: tp.Union[PreparedRequest, JascoError]) -> int:
    return r.batch_size if isinstance(r, PreparedRequest) else 1


def generate_batch(pipe: "JascoPipeline", reqs: tp.Sequence[Request],
                   max_prompts: tp.Optional[int] = None) -> tp.List[Outcome]:
    """Run resolved or prepared requests, batching those that can share a solve.

    Returns one outcome per request, in order: its :class:`GenerationResult` (``timings['batch_prompts']``:
    prompts in its solve), or the :class:`JascoError` it raised — one bad request does not fail the others.
    """
    prepared = _prepare_all(pipe, reqs)
    out: tp.List[tp.Optional[Outcome]] = [None] * len(reqs)
    for group in group_requests(pipe, prepared, max_prompts):
        for i, outcome in zip(group, solve_group(pipe, [prepared[i] for i in group])):
            out[i] = outcome
    return tp.cast(tp.List[Outcome], out)


def solve_group(pipe: "JascoPipeline", reqs: tp.Sequence[Request],
                cancel: tp.Optional[tp.Callable[[], bool]] = None) -> tp.List[Outcome]:
    """One group of :func:`group_requests`: a request that must run alone runs as the pipeline runs it, the
    others share one solve."""
    prepared = _prepare_all(pipe, reqs)
    if len(prepared) == 1 and (not isinstance(prepared[0], PreparedRequest) or batch_key(prepared[0]) is None):
        p = prepared[0]
        if isinstance(p, JascoError):
            return [p]
        try:
            res = pipe.run(p, progress=False, cancel=cancel)
        except JascoError as exc:
            return [exc]
        res.timings["batch_prompts"] = p.batch_size
        return [res]
    return solve_together(pipe, prepared, cancel=cancel)


def solve_together(pipe: "JascoPipeline", prepared: tp.Sequence[tp.Union[PreparedRequest, JascoError]],
                   cancel: tp.Optional[tp.Callable[[], bool]] = None) -> tp.List[Outcome]:
    """Requests of one :class:`BatchKey` in one solve: each keeps its conditions, noise and CFG weights; the
    flow step's rows are term-major over all prompts (the solve owner's :meth:`guided_field`)."""
    core = pipe.core
    total = clock()
    outcomes: tp.List[tp.Optional[Outcome]] = [p if isinstance(p, JascoError) else None for p in prepared]
    members: tp.List[tp.Tuple[int, PreparedRequest, Member, np.ndarray, tp.Optional[int], tp.Dict[str, float]]] = []
    for k, p in enumerate(prepared):
        if isinstance(p, JascoError):
            continue
        try:
            timings: tp.Dict[str, float] = {}
            p = core.separate(p, timings)
            noise, seed = core.initial_noise(p)
            conds = core.encode(p.windows[0], p.terms, timings)
            members.append((k, p, Member(conds, p.terms, p.batch_size), noise, seed, timings))
        except JascoError as exc:
            outcomes[k] = exc
    if not members:
        return tp.cast(tp.List[Outcome], outcomes)
    shared: tp.Dict[str, float] = {}
    traffic = Traffic()
    settings = members[0][1].request.settings
    try:
        with core.guided_field([m[2] for m in members]) as field:
            res = core.solve(settings, field, np.concatenate([m[3] for m in members], axis=0), cancel=cancel,
                             timings=shared, traffic=traffic)
    except Cancelled as exc:  # every member's caller went away
        for k, *_ in members:
            outcomes[k] = exc
        return tp.cast(tp.List[Outcome], outcomes)
    audio = core.decode(res.z, shared)
    batch = sum(m[2].batch for m in members)
    offset = 0
    for k, p, member, _, seed, timings in members:
        sl = slice(offset, offset + member.batch)
        offset += member.batch
        z, clip = res.z[sl], audio[sl]
        try:
            core.check_finite(z, clip)
        except JascoError as exc:
            outcomes[k] = exc
            continue
        t = dict(timings, **shared, total=total(), batch_prompts=batch)
        outcomes[k] = core.result(p, clip, z, res.nfe, t, seed, traffic=traffic)
    return tp.cast(tp.List[Outcome], outcomes)
