"""PyTorch reference of JASCO inference with audiocraft's API (audiocraft/models/jasco.py).

``JASCO.get_pretrained(...)`` → ``set_generation_params(...)`` → ``generate_music(...)``.  This is the
numerical reference every exported graph and the torch-free runtime are checked against.
"""
from __future__ import annotations

import logging
import math
import typing as tp
from dataclasses import dataclass

import numpy as np
import torch

from jasco_runtime.chords import load_chord_mapping

from . import loading
from .builders import build_flow_model
from .chords import frame_chords as _frame_chords
from .config import JascoConfig, parse_xp_cfg
from ..errors import InputError
from .flow_model import ConditionTensors, FlowModel
from .guidance import CFGTerm, cfg_terms

logger = logging.getLogger(__name__)
Chords = tp.Sequence[tp.Tuple[str, float]]


@dataclass
class GenerationOutput:
    audio: torch.Tensor  # [B, 1, samples]
    latents: torch.Tensor  # [B, T, 128], normalized (what the flow produces)
    nfe: int
    init_noise: torch.Tensor


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """audiocraft convert_audio's resampler (julius.resample_frac); identity when rates agree."""
    if int(from_rate) == int(to_rate):
        return wav
    import julius

    return julius.resample_frac(wav, int(from_rate), int(to_rate))


class JASCO:
    """JASCO generation around a :class:`FlowModel` whose drums conditioner holds the EnCodec."""

    def __init__(self, name: str, model: FlowModel, chords_mapping: tp.Dict[str, int], files: tp.Optional[loading.ModelFiles] = None):
        self.name = name
        self.model = model.eval()
        self.cfg: JascoConfig = model.cfg
        self.chords_mapping = chords_mapping
        self.files = files
        self.duration = self.cfg.segment_duration
        self.separator: tp.Any = None  # demucs model for separate_drums (reference/separation.py); None: htdemucs
        self.set_generation_params()

    # -- loading ------------------------------------------------------------------------------------
    @staticmethod
    def get_pretrained(name: str = "facebook/jasco-chords-drums-400M", device: tp.Optional[str] = None,
                       chords_mapping_path: tp.Optional[str] = None, t5: tp.Optional[str] = None,
                       revision: tp.Optional[str] = None) -> "JASCO":
        """Load a release checkpoint (hub id or directory) exactly as audiocraft does, on CPU float32.

        Args:
            name: hub id (resolved through HF_HUB_CACHE / HF_HUB_OFFLINE) or local directory.
            device: torch device; default cpu.
            chords_mapping_path: chord_to_index_mapping.pkl; default: next to the checkpoint.
            t5: override the T5 named in xp.cfg (hub id or directory).
            revision: hub revision.
        """
        files = loading.resolve_model(name, revision)
        state, cfg_text = loading.read_release(files.state_dict)  # memory-mapped: no copy of the weights
        cfg = parse_xp_cfg(cfg_text)
        t5_model, tokenizer = (None, None)
        t5_name = t5 or cfg.t5_name
        if t5_name is not None:
            t5_model, tokenizer = loading.load_t5(t5_name)
        t5_dim = t5_model.config.d_model if t5_model is not None else None
        # JASCO is built without storage and takes the checkpoint tensors as they are, so its weights
        # exist once; EnCodec is built on CPU (it computes non-persistent buffers at init) and its
        # random weights are replaced by the state dict's copy (BEHAVIOUR.md §12)
        compression = loading.load_compression_model(files.compression_state_dict)
        with torch.device("meta"):
            model = build_flow_model(cfg, t5_dim=t5_dim, compression_model=compression)
        loading.strict_load(model, state, what=str(files.state_dict), assign=True)
        del state
        if t5_model is not None:
            model.condition_provider.conditioners["description"].attach(t5_model, tokenizer)
        mapping = load_chord_mapping(loading.find_chords_mapping(files, chords_mapping_path)) \
            if "chords" in cfg.conditioners else {}
        model = model.to(device or "cpu").eval()
        return JASCO(name, model, mapping, files)

    # -- parameters ---------------------------------------------------------------------------------
    def set_generation_params(self, cfg_coef_all: float = 5.0, cfg_coef_txt: float = 0.0, **kwargs: tp.Any) -> None:
        """Replace the whole parameter dict, like audiocraft: without ``euler=True`` the solver is dopri5.

        Keys: cfg_coef_all, cfg_coef_txt, euler (False), euler_steps (100), ode_rtol (1e-5), ode_atol (1e-5).
        """
        allowed = {"euler", "euler_steps", "ode_rtol", "ode_atol"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise InputError(f"unknown generation parameter(s) {sorted(unknown)}; allowed: cfg_coef_all, cfg_coef_txt, {sorted(allowed)}")
        self.generation_params = {"cfg_coef_all": cfg_coef_all, "cfg_coef_txt": cfg_coef_txt, **kwargs}

    @property
    def compression_model(self):
        return self.model.condition_provider.conditioners["self_wav"].compression_model

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return float(self.compression_model.frame_rate)

    @property
    def n_frames(self) -> int:
        return int(math.ceil(self.duration * self.frame_rate))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- conditions ---------------------------------------------------------------------------------
    def frame_chords(self, chords: tp.Optional[Chords]) -> tp.Optional[torch.Tensor]:
        """Chord progression → per-frame indices [T] (None when absent)."""
        if not chords:
            return None
        return _frame_chords(list(chords), self.chords_mapping, self.frame_rate, self.duration)

    def prepare_drums(self, drums_wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """[C, T] or [1, C, T] → mono 32 kHz, trimmed / zero-padded to the segment: [1, 1, samples]."""
        if drums_wav.dim() == 2:
            drums_wav = drums_wav[None]
        if drums_wav.dim() != 3 or drums_wav.shape[0] != 1:
            raise InputError(f"drums wav must be [C, T] or [1, C, T], got {tuple(drums_wav.shape)}")
        wav = resample(drums_wav.float(), sample_rate, self.sample_rate).mean(dim=1, keepdim=True)
        n = int(self.duration * self.sample_rate)
        wav = wav[..., :n]
        if wav.shape[-1] < n:
            wav = torch.cat([wav, wav.new_zeros(1, 1, n - wav.shape[-1])], dim=-1)
        return wav

    def condition_inputs(self, descriptions: tp.Sequence[tp.Optional[str]], terms: tp.Sequence[CFGTerm],
                         frames: tp.Optional[np.ndarray] = None, drums: tp.Optional[torch.Tensor] = None,
                         melody: tp.Optional[torch.Tensor] = None) -> tp.Dict[str, tp.Any]:
        """Tokenized inputs of every conditioner for the CFG batch (term-major rows).

        Null semantics (BEHAVIOUR.md §2–4): chords absent → null chord everywhere (int32); dropped → null
        chord; melody dropped → zeros, except that with no chords audiocraft's symbolic dropout returns
        early and keeps the melody; dropped drums are a 1-sample zero wav that collation zero-pads to the
        longest drums of the batch (→ EnCodec "silence codes"), or stays ≤ 1 sample if no row has drums.
        """
        conds = self.model.condition_provider.conditioners
        T = self.n_frames
        chords_given = frames is not None
        out: tp.Dict[str, tp.Any] = {}
        rows = [(term, d) for term in terms for d in descriptions]
        if "description" in conds:
            out["description"] = conds["description"].tokenize(
                [None if term.drops_description else d for term, d in rows])
        if "self_wav" in conds:
            wavs = [drums.reshape(-1) if (drums is not None and not term.drops_drums) else torch.zeros(1)
                    for term, _ in rows]
            length = max(w.shape[-1] for w in wavs)
            out["self_wav"] = torch.stack([torch.cat([w, w.new_zeros(length - w.shape[-1])]) for w in wavs])[:, None]
        if "chords" in conds:
            card = conds["chords"].card
            if chords_given:
                fc = torch.as_tensor(frames, dtype=torch.int64)
                out["chords"] = torch.stack([torch.full_like(fc, card) if term.drops_chords else fc for term, _ in rows])
            else:
                out["chords"] = torch.full((len(rows), T), card, dtype=torch.int32)
        if "melody" in conds:
            bins = conds["melody"].card
            mel = melody if melody is not None else torch.zeros(bins, T)
            out["melody"] = torch.stack([torch.zeros_like(mel) if term.drops_melody(chords_given) else mel
                                         for term, _ in rows])
        return out

    def condition_tensors(self, tokenized: tp.Dict[str, tp.Any]) -> ConditionTensors:
        with torch.no_grad():
            return self.model.condition_provider(
                {k: (v.to(self.device) if isinstance(v, torch.Tensor) else {n: t.to(self.device) for n, t in v.items()})
                 for k, v in tokenized.items()})

    # -- vector field & solvers ---------------------------------------------------------------------
    def guided_vector_field(self, z: torch.Tensor, t: torch.Tensor, conditions: ConditionTensors,
                            terms: tp.Sequence[CFGTerm]) -> torch.Tensor:
        """One batched forward over all CFG terms, then v = Σ wᵢ vᵢ (one term: its output as is)."""
        n = len(terms)
        zz = z.repeat(n, 1, 1) if n > 1 else z
        v = self.model(zz, t, conditions)
        if n <= 1:
            return v
        return sum(term.weight * chunk for term, chunk in zip(terms, v.chunk(n)))

    def _check_inputs(self, descriptions: tp.Sequence[tp.Optional[str]], melody: tp.Optional[torch.Tensor],
                      drums: tp.Optional[torch.Tensor]) -> None:
        if not descriptions:
            raise InputError("no descriptions given; pass at least one text prompt (it may be '')")
        if melody is not None and "melody" not in self.model.condition_provider.conditioners:
            raise InputError(f"model {self.name} has no melody conditioner; drop the melody or use a "
                             "chords-drums-melody model")
        if drums is not None and "self_wav" not in self.model.condition_provider.conditioners:
            raise InputError(f"model {self.name} has no drums conditioner; drop the drums input")
        if melody is not None:
            bins = self.model.condition_provider.conditioners["melody"].card
            if melody.dim() != 2 or melody.shape[0] != bins:
                raise InputError(f"melody salience must be [{bins}, T], got {tuple(melody.shape)}; transpose a [T, {bins}] matrix")

    @torch.no_grad()
    def generate_music(self, descriptions: tp.Sequence[tp.Optional[str]], drums_wav: tp.Optional[torch.Tensor] = None,
                       drums_sample_rate: int = 32000, chords: tp.Optional[Chords] = None,
                       melody_salience_matrix: tp.Optional[torch.Tensor] = None, progress: bool = False,
                       return_latents: bool = False, seed: tp.Optional[int] = None,
                       init_noise: tp.Optional[torch.Tensor] = None, return_output: bool = False,
                       separate_drums: bool = False):
        """Generate audio [B, 1, samples] from text + optional chords / drums / melody.

        ``init_noise`` [B, T, 128] replays a generation exactly; ``seed`` seeds torch.randn otherwise.
        ``separate_drums`` runs htdemucs (``self.separator``, default demucs' ``htdemucs``) on the prepared
        drums (32 kHz mono, one segment), as audiocraft's DrumsConditioner always does (needs demucs).
        Returns audio, or (audio, latents) with ``return_latents``, or a :class:`GenerationOutput`.
        """
        self._check_inputs(descriptions, melody_salience_matrix, drums_wav)
        p = self.generation_params
        terms = cfg_terms(float(p["cfg_coef_all"]), float(p["cfg_coef_txt"]))
        drums = self.prepare_drums(drums_wav, drums_sample_rate) if drums_wav is not None else None
        if drums is not None and separate_drums:  # after the preparation, as audiocraft's conditioner does
            from .separation import separate_drums as _separate

            drums = _separate(drums, self.sample_rate, self.sample_rate, model=self.separator)
        melody = melody_salience_matrix.float() if melody_salience_matrix is not None else None
        tokenized = self.condition_inputs(descriptions, terms, self.frame_chords(chords), drums, melody)
        conditions = self.condition_tensors(tokenized)
        B, T, D = len(descriptions), self.n_frames, self.model.flow_dim
        if init_noise is None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            init_noise = torch.randn((B, T, D), generator=gen)
        elif tuple(init_noise.shape) != (B, T, D):
            raise InputError(f"init_noise must be [{B}, {T}, {D}], got {tuple(init_noise.shape)}")
        z0 = init_noise.to(self.device, torch.float32)
        latents, nfe = self.integrate(z0, conditions, terms, progress)
        audio = self.generate_audio(latents)
        if return_output:
            return GenerationOutput(audio, latents, nfe, init_noise)
        return (audio, latents) if return_latents else audio

    def integrate(self, z0: torch.Tensor, conditions: ConditionTensors, terms: tp.Sequence[CFGTerm],
                  progress: bool = False, constraint: tp.Optional[tp.Callable[[tp.Callable], tp.Callable]] = None
                  ) -> tp.Tuple[torch.Tensor, int]:
        """Solve dz/dt = v(z, t) from t=0 (noise) towards 1 (audiocraft FlowMatchingModel.generate).

        ``constraint`` wraps the guided vector field (long-form continuation, reference/longform.py)."""
        p = self.generation_params
        nfe = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=int(p.get("euler_steps", 100)) if p.get("euler") else None, unit="nfe", desc="ODE")

        def field(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            if bar is not None:
                bar.update(1)
            return self.guided_vector_field(z, t, conditions, terms)

        if constraint is not None:
            field = constraint(field)
        try:
            if p.get("euler", False):
                steps = int(p.get("euler_steps", 100))
                dt = 1 / steps
                z, t = z0, torch.zeros((1,), device=z0.device)
                for _ in range(steps):
                    z = z + dt * field(t, z)
                    t = t + dt
                return z, nfe
            from torchdiffeq import odeint

            ts = torch.tensor([0, 1.0 - 1e-5], device=z0.device)
            z = odeint(field, z0, ts, rtol=float(p.get("ode_rtol", 1e-5)), atol=float(p.get("ode_atol", 1e-5)))
            logger.info("dopri5 used %d vector-field evaluations", nfe)
            return z[-1], nfe
        finally:
            if bar is not None:
                bar.close()

    def generate_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents [B, T, D] → audio: decoder((latents·std + mean)ᵀ) (no quantization)."""
        unnorm = latents * self.cfg.latent_std + self.cfg.latent_mean
        with torch.no_grad():
            return self.compression_model.decode_latents(unnorm.permute(0, 2, 1))


def get_pretrained(name_or_dir: str, device: tp.Optional[str] = None, chords_mapping_path: tp.Optional[str] = None,
                   t5: tp.Optional[str] = None, revision: tp.Optional[str] = None) -> JASCO:
    """Module-level alias of :meth:`JASCO.get_pretrained`."""
    return JASCO.get_pretrained(name_or_dir, device, chords_mapping_path, t5, revision)
