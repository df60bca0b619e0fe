"""What to generate: a frozen :class:`GenerationRequest` as a caller writes it, and the frozen
:class:`ResolvedRequest` it resolves to (defaults filled in, every setting checked, with one-line messages).

Resolution is the settings half of the one input validator; the inputs half (chords, drums, melody, text
length, window plan) is :meth:`jasco_runtime.conditioning.ConditionProvider.prepare`.  Defaults come from the
export folder's ``generation_defaults`` (audiocraft's ``set_generation_params`` defaults: cfg_coef_all 5.0,
cfg_coef_txt 0.0, dopri5 unless Euler is asked for; the exporter records Euler 10).
"""
from __future__ import annotations

import dataclasses
import os
import typing as tp
from dataclasses import dataclass

import numpy as np

from .checks import integer, number
from .errors import InputError
from .solvers import SOLVERS, SolverSettings

ChordsInput = tp.Union[None, str, os.PathLike, tp.Sequence[tp.Tuple[str, float]]]
FIXED_STEP_SOLVERS = tuple(s for s in SOLVERS if s != "dopri5")
MAX_STEPS = 10_000
MAX_SEED = 2 ** 63 - 1
MAX_PROMPTS = 256  # prompts per call (a prompts file of 100 k lines is refused, not an allocation failure)


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """What to generate.  ``None`` means "the export folder's default"."""

    prompts: tp.Sequence[tp.Optional[str]]
    chords: ChordsInput = None
    drums: tp.Any = None  # path or [C, samples] / [samples] array
    drums_sample_rate: tp.Optional[int] = None
    drums_stem: tp.Optional[bool] = None  # True: already a drum stem; None: separate if the export can (separation/)
    melody: tp.Any = None  # path or [53, T] / [T, 53] salience
    cfg_coef_all: tp.Optional[float] = None
    cfg_coef_txt: tp.Optional[float] = None
    solver: tp.Optional[str] = None
    steps: tp.Optional[int] = None
    rtol: tp.Optional[float] = None
    atol: tp.Optional[float] = None
    seed: tp.Optional[int] = None
    init_noise: tp.Optional[np.ndarray] = None
    duration: tp.Optional[float] = None  # seconds; > one window uses windowed generation (longform)
    overlap: tp.Optional[float] = None

    def resolved(self, defaults: tp.Mapping[str, tp.Any]) -> "ResolvedRequest":
        """The checked request with defaults filled in; raises :class:`InputError` on the first bad setting."""
        return resolve(self, defaults)


@dataclass(frozen=True, eq=False)
class ResolvedRequest:
    """A request every setting of which is checked and filled in.  Inputs (chords, drums, melody) are as given;
    :meth:`ConditionProvider.prepare` turns them into a :class:`~jasco_runtime.conditioning.PreparedRequest`."""

    prompts: tp.Tuple[tp.Optional[str], ...]
    cfg_coef_all: float
    cfg_coef_txt: float
    solver: str
    steps: tp.Optional[int]  # fixed-step solvers
    rtol: tp.Optional[float]  # dopri5
    atol: tp.Optional[float]
    seed: tp.Optional[int]
    init_noise: tp.Optional[np.ndarray] = dataclasses.field(default=None, compare=False)
    duration: tp.Optional[float] = None
    overlap: tp.Optional[float] = None
    chords: ChordsInput = None
    drums: tp.Any = dataclasses.field(default=None, compare=False)
    drums_sample_rate: tp.Optional[int] = None
    melody: tp.Any = dataclasses.field(default=None, compare=False)
    drums_stem: tp.Optional[bool] = None

    @property
    def settings(self) -> SolverSettings:
        return SolverSettings(self.solver, self.steps, self.rtol, self.atol)


def _prompts(value: tp.Any) -> tp.Tuple[tp.Optional[str], ...]:
    prompts = [value] if isinstance(value, str) else value
    if prompts is None or isinstance(prompts, (bytes, dict)) or not isinstance(prompts, tp.Sequence):
        raise InputError("prompts must be a list of text prompts")
    prompts = list(prompts)
    if not prompts:
        raise InputError("no text prompt given; pass at least one description (it may be empty)")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(f"{len(prompts)} prompts in one call; at most {MAX_PROMPTS} — split them into several runs")
    for p in prompts:
        if p is not None and not isinstance(p, str):
            raise InputError(f"each prompt must be text, got {type(p).__name__} {p!r}")
        if p is not None and "\x00" in p:
            raise InputError("a prompt contains a NUL character; is the prompts file binary?")
        if p is not None:
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError("a prompt is not valid text (it holds a lone UTF-16 surrogate); send UTF-8") from None
    return tuple(prompts)


def resolve(req: GenerationRequest, defaults: tp.Mapping[str, tp.Any]) -> ResolvedRequest:
    """:meth:`GenerationRequest.resolved`."""
    prompts = _prompts(req.prompts)
    cfg_all = number("cfg_coef_all", defaults["cfg_coef_all"] if req.cfg_coef_all is None else req.cfg_coef_all)
    cfg_txt = number("cfg_coef_txt", defaults["cfg_coef_txt"] if req.cfg_coef_txt is None else req.cfg_coef_txt)
    solver = defaults["solver"] if req.solver is None else req.solver
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}; use one of {', '.join(sorted(SOLVERS))}")
    steps = rtol = atol = None
    if solver == "dopri5":
        if req.steps is not None:
            raise InputError("steps applies to the fixed-step solvers (euler, midpoint, heun); dopri5 adapts its "
                             "steps to rtol/atol — drop steps or pick a fixed-step solver")
        rtol = number("rtol", defaults["rtol"] if req.rtol is None else req.rtol, positive=True)
        atol = number("atol", defaults["atol"] if req.atol is None else req.atol, positive=True)
    else:
        if req.rtol is not None or req.atol is not None:
            raise InputError(f"rtol/atol apply to the adaptive dopri5 solver only; {solver} takes steps — "
                             "drop rtol/atol or use solver dopri5")
        steps = integer("steps", defaults["steps"] if req.steps is None else req.steps, 1, MAX_STEPS)
    seed = None if req.seed is None else integer("seed", req.seed, 0, MAX_SEED, " (use a non-negative seed)")
    noise = req.init_noise
    if noise is not None:
        if seed is not None:
            raise InputError("give either seed or init_noise, not both")
        noise = np.asarray(noise)
        if noise.dtype.kind not in "fiu":
            raise InputError(f"init noise must be a real float array, got dtype {noise.dtype}")
        noise = noise.astype(np.float32)
        if not np.isfinite(noise).all():
            raise InputError("init noise contains NaN or infinite values")
        noise.setflags(write=False)
    # duration/overlap: numbers here; their ranges are the window plan's one rule (longform.plan_windows)
    duration = None if req.duration is None else number("duration", req.duration, positive=True, unit="seconds")
    overlap = None if req.overlap is None else number("overlap", req.overlap, unit="seconds")
    if overlap is not None and duration is None:
        raise InputError("overlap applies to songs longer than one window; give a duration too (or drop overlap)")
    if req.drums_sample_rate is not None:
        integer("drums_sample_rate", req.drums_sample_rate, 1, 10_000_000)
    if req.drums_stem not in (None, True, False):
        raise InputError(f"drums_stem must be true, false or unset, got {req.drums_stem!r}")
    return ResolvedRequest(prompts, cfg_all, cfg_txt, solver, steps, rtol, atol, seed, noise, duration, overlap,
                           chords=req.chords, drums=req.drums, drums_sample_rate=req.drums_sample_rate,
                           melody=req.melody, drums_stem=req.drums_stem)
