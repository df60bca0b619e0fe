"""One generation request and its validation, shared by ``JascoPipeline.generate``, ``jasco-run`` and
``jasco-serve``: every numeric setting is checked here, before any heavy work, with one-line messages.

Defaults come from the export folder's ``generation_defaults`` (audiocraft's ``set_generation_params``
defaults: cfg_coef_all 5.0, cfg_coef_txt 0.0, dopri5 unless Euler is asked for; the exporter records Euler 10).
"""
from __future__ import annotations

import math
import numbers
import os
import typing as tp
from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError
from .solvers import SOLVERS

ChordsInput = tp.Union[None, str, os.PathLike, tp.Sequence[tp.Tuple[str, float]]]
FIXED_STEP_SOLVERS = tuple(s for s in SOLVERS if s != "dopri5")
MAX_STEPS = 10_000
MAX_SEED = 2 ** 63 - 1


def _number(name: str, value: tp.Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise InputError(f"{name} must be > 0, got {value:g}")
    return value


def _integer(name: str, value: tp.Any, lo: int, hi: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}, got {value}{hint}")
    return value


@dataclass
class GenerationRequest:
    """What to generate.  ``None`` means "the export folder's default"."""

    prompts: tp.List[tp.Optional[str]]
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

    def resolved(self, defaults: tp.Mapping[str, tp.Any]) -> "GenerationRequest":
        """A copy with defaults filled in; raises :class:`InputError` on the first bad setting."""
        prompts = [self.prompts] if isinstance(self.prompts, str) else self.prompts
        if prompts is None or isinstance(prompts, (bytes, dict)) or not isinstance(prompts, tp.Sequence):
            raise InputError("prompts must be a list of text prompts")
        prompts = list(prompts)
        if not prompts:
            raise InputError("no text prompt given; pass at least one description (it may be empty)")
        for p in prompts:
            if p is not None and not isinstance(p, str):
                raise InputError(f"each prompt must be text, got {type(p).__name__} {p!r}")
            if p is not None and "\x00" in p:
                raise InputError("a prompt contains a NUL character; is the prompts file binary?")
        cfg_all = _number("cfg_coef_all", defaults["cfg_coef_all"] if self.cfg_coef_all is None else self.cfg_coef_all)
        cfg_txt = _number("cfg_coef_txt", defaults["cfg_coef_txt"] if self.cfg_coef_txt is None else self.cfg_coef_txt)
        solver = defaults["solver"] if self.solver is None else self.solver
        if solver not in SOLVERS:
            raise InputError(f"unknown solver {solver!r}; use one of {', '.join(sorted(SOLVERS))}")
        steps = rtol = atol = None
        if solver == "dopri5":
            if self.steps is not None:
                raise InputError("steps applies to the fixed-step solvers (euler, midpoint, heun); dopri5 adapts its "
                                 "steps to rtol/atol — drop steps or pick a fixed-step solver")
            rtol = _number("rtol", defaults["rtol"] if self.rtol is None else self.rtol, positive=True)
            atol = _number("atol", defaults["atol"] if self.atol is None else self.atol, positive=True)
        else:
            if self.rtol is not None or self.atol is not None:
                raise InputError(f"rtol/atol apply to the adaptive dopri5 solver only; {solver} takes steps — "
                                 "drop rtol/atol or use solver dopri5")
            steps = _integer("steps", defaults["steps"] if self.steps is None else self.steps, 1, MAX_STEPS)
        seed = None if self.seed is None else _integer("seed", self.seed, 0, MAX_SEED, " (use a non-negative seed)")
        noise = self.init_noise
        if noise is not None:
            if seed is not None:
                raise InputError("give either seed or init_noise, not both")
            noise = np.asarray(noise)
            if noise.dtype.kind not in "fiu":
                raise InputError(f"init noise must be a float array, got dtype {noise.dtype}")
            noise = noise.astype(np.float32)
            if not np.isfinite(noise).all():
                raise InputError("init noise contains NaN or infinite values")
        duration = None if self.duration is None else _number("duration", self.duration, positive=True)
        overlap = None if self.overlap is None else _number("overlap", self.overlap, positive=True)
        if self.drums_stem not in (None, True, False):
            raise InputError(f"drums_stem must be true, false or unset, got {self.drums_stem!r}")
        if self.drums_sample_rate is not None:
            _integer("drums_sample_rate", self.drums_sample_rate, 1, 10_000_000)
        return replace(self, prompts=prompts, cfg_coef_all=cfg_all, cfg_coef_txt=cfg_txt, solver=solver, steps=steps,
                       rtol=rtol, atol=atol, seed=seed, init_noise=noise, duration=duration, overlap=overlap)
