"""PyTorch reference of long-form generation (songs longer than one 10-s window; issue 11).

The algorithm the torch-free runtime (``jasco_runtime/longform.py``) is checked against, written apart
from it on the reference's own plan, chord framing, CFG terms, solver and decoder code: windows (every
``window − overlap`` seconds, the last one ending with the song) → per window the conditions of the song's
timeline (chords framed from the window's first frame with audiocraft's ``construct_frame_chords``
``min_timestamp``, the drum stem's and the melody's slices, the prompts) →
the guided vector field wrapped by the continuation constraint (the overlap frames follow the flow
path of audiocraft/solvers/jasco.py ``_z`` from this window's noise to the previous window's latents,
with the path's velocity ``_vector_field``) → the overlap frames set to those latents → stitched
(overlap from the earlier window) → one decoder call on the whole song.
"""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass

import torch

from ..errors import InputError
from .chords import construct_frame_chords
from .guidance import cfg_terms
from .jasco import JASCO, resample

SIGMA_MIN = 1e-5  # audiocraft/solvers/jasco.py `_z`


@dataclass
class SongPlan:
    n_frames: int  # N
    n_samples: int
    starts: tp.List[int]  # first frame of each window
    known: tp.List[int]  # leading frames of each window shared with the previous one


def plan_song(duration: float, overlap: float, window_frames: int, frame_rate: float, samples_per_frame: int,
              sample_rate: int, max_duration: float) -> SongPlan:
    """Windows of ``window_frames`` every ``window − overlap`` seconds, the last one ending with the song."""
    if not (math.isfinite(duration) and 0 < duration <= max_duration):
        raise InputError(f"duration must be in (0, {max_duration:g}] seconds, got {duration}")
    P = int(round(overlap * frame_rate))
    if not (math.isfinite(overlap) and overlap > 0 and P < window_frames):
        raise InputError(f"overlap must be > 0 and shorter than the window, got {overlap}")
    n_samples = int(round(duration * sample_rate))
    N = math.ceil(n_samples / samples_per_frame)
    hop = window_frames - P
    count = 1 + max(0, math.ceil((N - window_frames) / hop))
    starts = [min(k * hop, N - window_frames) for k in range(count)]
    known = [0] + [prev + window_frames - cur for prev, cur in zip(starts, starts[1:])]
    return SongPlan(N, n_samples, starts, known)

Field = tp.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SongOutput:
    audio: torch.Tensor  # [B, 1, duration · sample_rate]
    latents: torch.Tensor  # [B, N, 128] stitched
    nfe: int
    plan: SongPlan
    windows: tp.List[torch.Tensor]  # each window's own latents [B, T, 128]
    init_noise: torch.Tensor  # [B, N, 128]


def continuation(known: torch.Tensor, noise: torch.Tensor, sigma_min: float = SIGMA_MIN) -> tp.Callable[[Field], Field]:
    """Wrap a vector field so that frames [0, P) follow z_t = (1 − (1 − σ)·t)·noise + t·known with
    velocity known − (1 − σ)·noise (inpainting for flows)."""
    P = known.shape[1]
    velocity = known - (1 - sigma_min) * noise

    def wrap(field: Field) -> Field:
        def constrained(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            z = z.clone()
            z[:, :P] = (1 - (1 - sigma_min) * t) * noise + t * known
            v = field(t, z).clone()
            v[:, :P] = velocity
            return v
        return constrained

    return wrap


def song_drums(wav: torch.Tensor, sample_rate: int, target_rate: int, samples: int) -> torch.Tensor:
    """[C, T] drum stem → mono at ``target_rate``, trimmed / zero-padded to ``samples``: [1, 1, samples]."""
    if wav.dim() == 2:
        wav = wav[None]
    mono = resample(wav.float(), sample_rate, target_rate).mean(dim=1, keepdim=True)[..., :samples]
    return torch.cat([mono, mono.new_zeros(1, 1, samples - mono.shape[-1])], dim=-1)


@torch.no_grad()
def generate_song(jasco: JASCO, descriptions: tp.Sequence[tp.Optional[str]], duration: float,
                  overlap: float = 2.5, drums_wav: tp.Optional[torch.Tensor] = None,
                  drums_sample_rate: int = 32000, chords: tp.Optional[tp.Sequence[tp.Tuple[str, float]]] = None,
                  melody_salience_matrix: tp.Optional[torch.Tensor] = None, seed: tp.Optional[int] = None,
                  init_noise: tp.Optional[torch.Tensor] = None,
                  window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None,
                  max_duration: float = 60.0, separate_drums: bool = False) -> SongOutput:
    """``duration`` seconds (more than one window) with the generation parameters set on ``jasco``;
    ``separate_drums``: htdemucs (``jasco.separator``) runs once on the whole song's drums, then windows slice it."""
    sr, T, D = jasco.sample_rate, jasco.n_frames, jasco.model.flow_dim
    per_frame = int(jasco.duration * sr) // T
    plan = plan_song(float(duration), float(overlap), T, jasco.frame_rate, per_frame, sr, max_duration)
    if len(plan.starts) < 2:
        raise InputError(f"{duration:g} s fits one window; use JASCO.generate_music")
    jasco._check_inputs(descriptions, melody_salience_matrix, drums_wav)
    B, N = len(descriptions), plan.n_frames
    prompts = [list(descriptions)] * len(plan.starts) if window_descriptions is None else [list(p) for p in window_descriptions]
    p = jasco.generation_params
    terms = cfg_terms(float(p["cfg_coef_all"]), float(p["cfg_coef_txt"]))
    drums = None if drums_wav is None else song_drums(drums_wav, drums_sample_rate, sr, N * per_frame)
    if drums is not None and separate_drums:
        from .separation import separate_drums as _separate

        drums = _separate(drums, sr, sr, model=jasco.separator)
        drums = torch.cat([drums, drums.new_zeros(1, 1, N * per_frame - drums.shape[-1])], -1)[..., :N * per_frame]
    if init_noise is None:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        init_noise = torch.randn((B, N, D), generator=gen)
    elif tuple(init_noise.shape) != (B, N, D):
        raise InputError(f"init_noise must be [{B}, {N}, {D}], got {tuple(init_noise.shape)}")
    song = torch.zeros(B, N, D)
    windows, nfe = [], 0
    for start, P, window_prompts in zip(plan.starts, plan.known, prompts):
        end = start + T
        frames = None
        if chords:  # audiocraft JASCO._prepare_chord_conditions flips to (start, label); framed from `start` on
            frames = torch.tensor(construct_frame_chords(start, [(float(t), c) for c, t in chords], jasco.chords_mapping,
                                                         "", jasco.frame_rate, jasco.duration), dtype=torch.int64)
        wav = None if drums is None else drums[..., start * per_frame:end * per_frame]
        mel = None if melody_salience_matrix is None else melody_salience_matrix.float()[:, start:end]
        conditions = jasco.condition_tensors(jasco.condition_inputs(window_prompts, terms, frames, wav, mel))
        z0 = init_noise[:, start:end].float()
        known = song[:, start:start + P]
        constraint = continuation(known, z0[:, :P]) if P else None
        z, n = jasco.integrate(z0, conditions, terms, constraint=constraint)
        z = z.clone()
        z[:, :P] = known
        song[:, start + P:end] = z[:, P:]
        windows.append(z)
        nfe += n
    audio = jasco.generate_audio(song)[..., :plan.n_samples]
    return SongOutput(audio, song, nfe, plan, windows, init_noise)
