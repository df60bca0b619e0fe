"""Songs longer than one 10-s window: windowed JASCO generation with flow-matching continuation.

JASCO is trained on 10-s segments (500 latent frames); nothing in the model continues a song. This
module builds longer songs from the existing graphs, without training (issue 11):

* **Window plan and per-window conditions**: :mod:`jasco_runtime.windows` (re-exported here), prepared by
  :meth:`ConditionProvider.prepare` (a drum stem shorter than the song is **zero-padded**, as a 10-s request
  zero-pads it; one prompt list per window optional). The initial noise is one [B, N, D] draw (``seed``) sliced
  per window.
* **Continuation** (:class:`Continuation`): window k+1's first frames overlap window k's last ones and
  are pinned to window k's final latents by inpainting for flows (RePaint, Lugmayr et al. 2022, on the
  flow path of audiocraft/solvers/jasco.py ``_z``): every vector-field evaluation sees those frames at
  z_t = (1 − (1 − σ_min)·t)·z_0 + t·z_1 (z_0 the window's own initial noise there, z_1 the known
  latents, σ_min = 1e-5), and the velocity returned for them is the path's, z_1 − (1 − σ_min)·z_0, so
  the solver state moves along that path. Applied inside the vector field, the constraint holds at
  every stage of every solver (Euler, midpoint, Heun, dopri5); at the end the overlap frames are set to
  z_1 itself (the path's end, less its σ_min·z_0 residue).
* **Stitching** (:func:`stitch`): the overlap frames are taken from the earlier window (default;
  with the constraint both windows hold the same values there) or cross-faded with an equal-power
  ramp (``"blend"``, for comparison; benchmarks/long_songs.py measures both at the seams); the song's
  latents are decoded once by the EnCodec decoder graph, whose frame axis is dynamic.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

from .backends.base import Traffic
from .conditioning import PreparedRequest
from .generation import Cancel, GenerationCore, GenerationResult, Member
from .timing import clock
from .windows import (DEFAULT_OVERLAP, MIN_HOP, Window, WindowPlan, fit_length,  # noqa: F401
                      plan_for_folder, plan_windows, seconds, window_chords, window_descriptions_for, window_drums,
                      window_melody)  # the window math, re-exported for callers of the long-song API

SIGMA_MIN = 1e-5  # audiocraft/solvers/jasco.py `_z` / `_vector_field`
STITCH_MODES = ("earlier", "blend")


# -- continuation --------------------------------------------------------------------------------
VectorField = tp.Callable[[float, np.ndarray], np.ndarray]


@dataclass
class Continuation:
    """Inpainting for flows: the first ``P`` frames of a window follow the flow path towards ``known``.

    ``known``: [B, P, D] latents of the previous window on the overlap (z_1); ``noise``: [B, P, D]
    this window's initial noise there (z_0).
    """

    known: np.ndarray
    noise: np.ndarray
    sigma_min: float = SIGMA_MIN

    def __post_init__(self) -> None:
        self.known = np.asarray(self.known, np.float32)
        self.noise = np.asarray(self.noise, np.float32)
        self.frames = self.known.shape[1]
        # audiocraft `_vector_field`: z_1 − (1 − σ_min)·z_0, constant along the path
        self.velocity = (self.known - np.float32(1 - self.sigma_min) * self.noise).astype(np.float32)

    def path(self, t: float) -> np.ndarray:
        """audiocraft `_z`: (1 − (1 − σ_min)·t)·z_0 + t·z_1, in float32."""
        t32 = np.float32(t)
        return (np.float32(1) - np.float32(1 - self.sigma_min) * t32) * self.noise + t32 * self.known

    def wrap(self, field: VectorField) -> VectorField:
        """The constrained vector field: the overlap frames of its input are replaced by the path at t,
        and its output there is the path's velocity."""
        P = self.frames

        def constrained(t: float, z: np.ndarray) -> np.ndarray:
            z = np.array(z, copy=True)
            z[:, :P] = self.path(t)
            v = np.array(field(t, z), copy=True)
            v[:, :P] = self.velocity
            return v

        return constrained

    def finish(self, z: np.ndarray) -> np.ndarray:
        """The solved window with its overlap frames set to the known latents (the path's end point)."""
        z = np.array(z, copy=True)
        z[:, :self.frames] = self.known
        return z


def stitch(song: np.ndarray, z: np.ndarray, window: Window, mode: str = "earlier") -> None:
    """Write window ``z`` [B, T, D] into ``song`` [B, N, D] (in place).

    ``earlier``: the overlap keeps the earlier window's frames; ``blend``: equal-power cross-fade over
    the overlap, cos/sin of a quarter period sampled at frame centres.
    """
    if mode not in STITCH_MODES:
        raise ValueError(f"unknown stitch mode {mode!r}; use one of {STITCH_MODES}")
    P = window.known
    if mode == "blend" and P > 0:
        theta = (np.arange(P, dtype=np.float64) + 0.5) / P * (np.pi / 2)
        old, new = np.cos(theta).astype(np.float32)[None, :, None], np.sin(theta).astype(np.float32)[None, :, None]
        song[:, window.start:window.start + P] = old * song[:, window.start:window.start + P] + new * z[:, :P]
    song[:, window.start + P:window.end] = z[:, P:]


# -- generation ------------------------------------------------------------------------------------
@dataclass
class WindowResult:
    """One solved window: its place in the song, its latents [B, T, D] and its evaluations."""

    window: Window
    latents: np.ndarray
    nfe: int


def generate_song(core: GenerationCore, prepared: PreparedRequest, progress: bool = True,
                  cancel: tp.Optional[Cancel] = None, continuation: bool = True,
                  stitch_mode: str = "earlier") -> GenerationResult:
    """Generate ``prepared.plan.duration`` seconds (more than one window) window by window (module docstring).

    The request's ``init_noise`` [B, N, D] replays a song (N = ``plan.n_frames``); ``continuation=False`` solves
    the windows independently (the baseline of the seam metrics).  Returns a ``GenerationResult`` whose
    ``windows`` hold every window's own latents.  ``cancel`` is asked between evaluations (and so between windows).
    """
    plan, settings = prepared.plan, prepared.request.settings
    B, D, N = prepared.batch_size, core.folder.latent_dim, plan.n_frames
    timings: tp.Dict[str, float] = {}
    traffic = Traffic()
    total = clock()
    prepared = core.separate(prepared, timings)  # once for the whole song's stem, then sliced per window
    init_noise, seed = core.initial_noise(prepared)
    song = np.zeros((B, N, D), np.float32)
    results: tp.List[WindowResult] = []
    expected = settings.expected_nfe
    with core.progress(progress, None if expected is None else expected * plan.n_windows,
                       f"{settings.solver} × {plan.n_windows} windows") as tick:
        for w, inputs in zip(plan.windows, prepared.windows):
            conds = core.encode(inputs, prepared.terms, timings)
            z0 = init_noise[:, w.start:w.end]
            constraint = Continuation(song[:, w.start:w.start + w.known], z0[:, :w.known]) \
                if (continuation and w.known > 0) else None
            with core.guided_field([Member(conds, prepared.terms, B)]) as field:
                res = core.solve(settings, field, z0, progress=tick, cancel=cancel, timings=timings,
                                 traffic=traffic, constraint=constraint)
            z = res.z if constraint is None else constraint.finish(res.z)
            stitch(song, z, w, stitch_mode)
            results.append(WindowResult(w, z, res.nfe))
    nfe = sum(r.nfe for r in results)
    audio = core.decode(song, timings)[..., :plan.n_samples]
    core.check_finite(song, audio)
    timings["total"] = total()
    return core.result(prepared, audio, song, nfe, timings, seed, windows=results, traffic=traffic)


