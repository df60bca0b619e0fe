"""Songs longer than one 10-s window: windowed JASCO generation with flow-matching continuation.

JASCO is trained on 10-s segments (500 latent frames); nothing in the model continues a song. This
module builds longer songs from the existing graphs, without training (issue 11):

* **Window plan** (:func:`plan_windows`): ``duration`` seconds → N latent frames, covered by windows of
  T frames that start every ``T − overlap`` frames; the last window is aligned to the song's end (its
  overlap with the one before is then longer).
* **Conditions** come from the global timeline: chords framed from the window's first frame on
  (audiocraft ``construct_frame_chords`` with ``min_timestamp``: a chord active at the window start is
  carried in at frame 0), the drum stem's and the melody's slices under the window (a drum stem
  shorter than the song is **zero-padded**, as a 10-s request zero-pads it), the same text prompt (or
  one prompt per window). The initial noise is one [B, N, D] draw (``seed``) sliced per window.
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

import math
import typing as tp
from dataclasses import dataclass

import numpy as np

from . import chords as chords_mod
from .errors import InputError, JascoError
from .guidance import cfg_terms
from .solvers import SOLVERS, ODEResult

if tp.TYPE_CHECKING:  # pragma: no cover
    from .pipeline import GenerationResult, JascoPipeline
    from .request import GenerationRequest

SIGMA_MIN = 1e-5  # audiocraft/solvers/jasco.py `_z` / `_vector_field`
DEFAULT_OVERLAP = 2.5  # seconds shared by consecutive windows
EXPORT_MAX_DURATION = 60.0  # seconds the exported decoder takes (jasco_export.graphs.spec.MAX_DURATION)
STITCH_MODES = ("earlier", "blend")


# -- window plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Global frames [start, end) of one generation window; its first ``known`` frames overlap the
    previous window and are constrained to its latents (0 for the first window)."""

    index: int
    start: int
    end: int
    known: int


@dataclass(frozen=True)
class WindowPlan:
    duration: float  # requested seconds
    overlap: float  # requested overlap seconds
    frame_rate: float
    sample_rate: int
    window_frames: int  # T
    samples_per_frame: int
    n_frames: int  # N latent frames of the song (ceil of the samples over samples per frame)
    n_samples: int  # round(duration · sample_rate)
    windows: tp.Tuple[Window, ...]

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    @property
    def seams(self) -> tp.List[int]:
        """Global frame of each window's first new frame after the first window (where a stitched song
        switches from one window's latents to the next)."""
        return [w.start + w.known for w in self.windows[1:]]


def seconds(name: str, value: tp.Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite number of seconds, got {value!r}")
    return x


def plan_windows(duration: float, overlap: tp.Optional[float], window_frames: int, frame_rate: float,
                 samples_per_frame: int, sample_rate: int, max_duration: float) -> WindowPlan:
    """Windows covering ``duration`` seconds, consecutive ones sharing ``overlap`` seconds.

    Window k starts at frame k·(T − P) (P = overlap frames), the last one at N − T so that it ends with
    the song; a song of at most one window has one window (its audio is trimmed to ``duration``).
    """
    duration = seconds("duration", duration)
    overlap = DEFAULT_OVERLAP if overlap is None else seconds("overlap", overlap)
    window_s = window_frames / frame_rate
    if duration <= 0:
        raise InputError(f"duration must be > 0 seconds, got {duration:g}")
    if duration > max_duration + 1e-9:
        raise InputError(f"duration {duration:g} s is longer than this export's maximum of {max_duration:g} s; "
                         f"ask for at most {max_duration:g} s")
    P = int(round(overlap * frame_rate))
    if overlap < 0 or P >= window_frames:
        raise InputError(f"overlap must be ≥ 0 and shorter than the {window_s:g}-s window, got {overlap:g} s")
    n_samples = int(round(duration * sample_rate))
    N = -(-n_samples // samples_per_frame)
    windows = [Window(0, 0, window_frames, 0)]
    hop = window_frames - P
    while windows[-1].end < N:
        prev = windows[-1]
        start = min(prev.start + hop, N - window_frames)
        windows.append(Window(len(windows), start, start + window_frames, prev.end - start))
    return WindowPlan(duration, overlap, float(frame_rate), int(sample_rate), int(window_frames),
                      int(samples_per_frame), N, n_samples, tuple(windows))


# -- per-window conditions -------------------------------------------------------------------------
def window_chords(progression: tp.Sequence[tp.Tuple[str, float]], mapping: tp.Mapping[str, int],
                  frame_rate: float, window_seconds: float, window: Window) -> np.ndarray:
    """Chord index per frame of ``window`` [T], framed on the song's timeline from its first frame on:
    changes before the window start are consumed there, so the chord active then sits at frame 0."""
    return chords_mod.frame_chords(progression, mapping, frame_rate, window_seconds, min_timestamp=window.start)


def fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad a mono waveform to ``n`` samples."""
    wav = wav[:n]
    if wav.shape[0] < n:
        wav = np.concatenate([wav, np.zeros(n - wav.shape[0], wav.dtype)])
    return wav


def window_drums(song_drums: np.ndarray, plan: WindowPlan, window: Window) -> np.ndarray:
    """The drum stem's samples under ``window`` (the song stem is already fitted to the windows)."""
    a = window.start * plan.samples_per_frame
    return song_drums[a:a + plan.window_samples]


def window_melody(melody: np.ndarray, window: Window) -> np.ndarray:
    """Salience frames under ``window`` [bins, ≤ T] (shorter at the melody's end: zero-padded after
    the projection, as for a short 10-s melody)."""
    return melody[:, window.start:window.end]


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


def window_descriptions_for(plan: WindowPlan, descriptions: tp.Sequence[tp.Optional[str]],
                            per_window: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]]
                            ) -> tp.List[tp.List[tp.Optional[str]]]:
    """The prompts of each window: ``descriptions`` for all, or ``per_window[k]`` (one list of B prompts
    per window) when given."""
    if per_window is None:
        return [list(descriptions)] * plan.n_windows
    per_window = [[p] if isinstance(p, str) else list(p) for p in per_window]
    if len(per_window) != plan.n_windows:
        raise InputError(f"window_descriptions has {len(per_window)} entries but this duration/overlap makes "
                         f"{plan.n_windows} windows; give one prompt list per window")
    bad = [k for k, p in enumerate(per_window) if len(p) != len(descriptions)]
    if bad:
        raise InputError(f"window_descriptions[{bad[0]}] has {len(per_window[bad[0]])} prompt(s), expected "
                         f"{len(descriptions)} (one per clip)")
    return per_window


def solve(field: VectorField, z0: np.ndarray, solver: str, steps: tp.Optional[int], rtol: tp.Optional[float],
          atol: tp.Optional[float],
          callback: tp.Optional[tp.Callable[[int, int], None]] = None) -> ODEResult:
    """One window's ODE solve with the pipeline's solvers."""
    if solver == "dopri5":
        return SOLVERS["dopri5"](field, z0, rtol=rtol, atol=atol, callback=callback)
    return SOLVERS[solver](field, z0, steps, callback=callback)


def generate_song(pipe: "JascoPipeline", plan: WindowPlan, req: "GenerationRequest", progress: bool = True,
                  window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None,
                  continuation: bool = True, stitch_mode: str = "earlier") -> "GenerationResult":
    """Generate ``plan.duration`` seconds (more than one window) window by window (module docstring),
    with the settings of a resolved ``req``.

    ``req.init_noise`` [B, N, D] replays a song (N = ``plan.n_frames``); ``continuation=False`` solves
    the windows independently (the baseline of the seam metrics).  Returns a ``GenerationResult`` whose
    ``windows`` hold every window's own latents.
    """
    from .pipeline import GenerationResult, _timer

    descriptions, solver, steps = req.prompts, req.solver, req.steps
    m = pipe.manifest
    B, T, D, N = len(descriptions), plan.window_frames, m.latent_dim, plan.n_frames
    prompts = window_descriptions_for(plan, descriptions, window_descriptions)
    timings: tp.Dict[str, float] = {}
    total = _timer()
    terms = cfg_terms(req.cfg_coef_all, req.cfg_coef_txt)
    progression = pipe._progression(req.chords)
    song_samples = max(N, T) * plan.samples_per_frame
    song_drums = pipe._drums(req.drums, req.drums_sample_rate, seconds=song_samples / plan.sample_rate,
                             stem=req.drums_stem)  # separated once for the whole song, then sliced per window
    if song_drums is not None:
        song_drums = fit_length(song_drums, song_samples)
    mel = pipe._melody(req.melody)
    init_noise = req.init_noise
    if init_noise is None:
        init_noise = np.random.default_rng(req.seed).standard_normal((B, N, D)).astype(np.float32)
    if init_noise.shape != (B, N, D):
        raise InputError(f"init noise of a {plan.duration:g}-s song must be [{B}, {N}, {D}] for {B} prompt(s), "
                         f"got {list(init_noise.shape)}")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps * plan.n_windows if solver != "dopri5" else None, unit="nfe",
                   desc=f"{solver} × {plan.n_windows} windows")

    def callback(nfe: int, estimate: int) -> None:
        if bar is not None:
            bar.update(1)

    song = np.zeros((B, N, D), np.float32)
    results: tp.List[WindowResult] = []
    try:
        for w, window_prompts in zip(plan.windows, prompts):
            frames = None if progression is None else window_chords(progression, pipe.chords_mapping,
                                                                     m.frame_rate, m.duration, w)
            step_timings: tp.Dict[str, float] = {}
            conds = pipe.conditions(window_prompts, terms, frames,
                                    None if song_drums is None else window_drums(song_drums, plan, w),
                                    None if mel is None else window_melody(mel, w), step_timings)
            field = pipe.vector_field(conds, terms)
            z0 = init_noise[:, w.start:w.end]
            constraint = Continuation(song[:, w.start:w.start + w.known], z0[:, :w.known]) \
                if (continuation and w.known > 0) else None
            clock = _timer()
            res = solve(field if constraint is None else constraint.wrap(field), z0, solver, steps, req.rtol, req.atol,
                        callback)
            step_timings["flow"] = clock()
            z = res.z if constraint is None else constraint.finish(res.z)
            stitch(song, z, w, stitch_mode)
            results.append(WindowResult(w, z, res.nfe))
            for k, v in step_timings.items():
                timings[k] = timings.get(k, 0.0) + v
    finally:
        if bar is not None:
            bar.close()
    nfe = sum(r.nfe for r in results)
    timings["flow_per_eval"] = timings["flow"] / max(nfe, 1)
    clock = _timer()
    audio = pipe._run_chunked("encodec_decoder", {"latents": song}, "audio")[..., :plan.n_samples]
    timings["decoder"] = clock()
    for what, x in (("latents", song), ("audio", audio)):
        if not np.isfinite(x).all():
            raise JascoError(f"the generation produced non-finite {what} (NaN/Inf); nothing was written — check the "
                             f"artifacts with `jasco-run verify {m.folder}`")
    timings["total"] = total()
    return GenerationResult(audio=audio, latents=song, sample_rate=m.sample_rate, nfe=nfe, timings=timings,
                            terms=list(terms), windows=results)


def plan_for_folder(folder: tp.Any, duration: float, overlap: tp.Optional[float] = None) -> WindowPlan:
    """The window plan of ``duration`` seconds for an export folder; the maximum duration is what its decoder
    graph takes (a decoder exported for one window only serves one window)."""
    decoder_frames = folder.graphs["encodec_decoder"].max_size("frames")
    if decoder_frames is None and seconds("duration", duration) > folder.duration:
        raise InputError(f"the decoder of {folder.folder} was exported for {folder.duration:g}-s clips only; re-export "
                         f"with this version of jasco-export for songs up to {EXPORT_MAX_DURATION:g} s")
    return plan_windows(duration, overlap, folder.n_frames, folder.frame_rate, folder.segment_samples // folder.n_frames,
                        folder.sample_rate, max_duration=(decoder_frames or folder.n_frames) / folder.frame_rate)
