"""One declaration per exported graph: its module, I/O names, dynamic axes, profile and sample input.

The exporter, the parity gate, the TensorRT builder, the manifest and the runtime all read these
declarations (the TensorRT demo/Diffusion pattern: each network owns its whole I/O contract).

Graph contracts (B = prompts × CFG terms, L = text tokens, T = latent frames, S = samples):

=================  ===========================================  ==========================================
graph              inputs                                       outputs
=================  ===========================================  ==========================================
text_encoder       input_ids [B, L] int64, attention_mask [B,L]  text [B, L, dim] (output_proj(T5)·mask)
drums_encoder      wav [B, 1, S] float32 (S = 10 s · 32 kHz)     drums [B, T, drums_dim] (codes → blur → proj),
                                                                codes [B, T] int64 (layer-0 RVQ codes)
flow_step          z [B, T, 128], t [B], text [B, L, dim],        v [B, T, 128] raw vector field per row
                   chords [B, T, 16], drums [B, T, 2],            (CFG combination happens in the runtime)
                   (melody [B, T, 16])
encodec_decoder    latents [B, F, 128] (normalized; F frames,    audio [B, 1, F · hop]; un-normalisation
                   T ≤ F ≤ max_duration · frame rate)           folded in (F dynamic: songs > 10 s)
encodec_encoder    wav [B, 1, S]                                  latents [B, 128, T] (unquantized)
solver_step        v_rows [P, terms, T, 128] (the flow step's     v [P, T, 128] guided field, z [P, T, 128] stage
                   rows, prompt-major), weights [P, terms],      input base + Σ slot_j·c_j, z_rows [P, terms, T,
                   base, k0 … k6 [P, T, 128], c [17], keep       128] (z, or the continuation path where keep =
                   [P, T, 1], velocity, noise, known, a, b        1), sq [P] error norm's squared sum; no weights
drums_separator    mix [B, 2, L], spec [B, 4, 2048, T'] (htdemucs  drums_spec [B, 4, 2048, T'], drums_wave [B, 2, L]
                   segment at 44.1 kHz and its numpy STFT)       (STFT/iSTFT, apply_model in the runtime; only
                                                                with a separator: graphs/separator.py)
=================  ===========================================  ==========================================

Chords and melody embedders are tiny lookups / affine maps: exported as tables (``tables.npz``), not graphs.
"""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass, field

import torch
from torch import nn

from jasco_runtime import stage_layout
from jasco_runtime.export_folder import AxisRecord, GraphRecord, TensorRecord

from ..reference.flow_model import FlowModel
from ..reference.longform import SIGMA_MIN

if tp.TYPE_CHECKING:  # pragma: no cover
    from ..reference.jasco import JASCO


@dataclass
class TensorSpec:
    """Name, dtype and shape of one graph input/output; ints are fixed, strings are dynamic axes."""

    name: str
    dtype: str  # numpy dtype name
    shape: tp.Tuple[tp.Union[int, str], ...]


@dataclass
class ProfileRange:
    """min / opt / max of a dynamic axis, for TensorRT optimisation profiles."""

    min: int
    opt: int
    max: int


@dataclass
class GraphSpec:
    """Everything about one exported graph except its weights."""

    name: str
    module: nn.Module
    inputs: tp.List[TensorSpec]
    outputs: tp.List[TensorSpec]
    axes: tp.Dict[str, ProfileRange] = field(default_factory=dict)
    description: str = ""
    fp32_ops: tp.Tuple[str, ...] = ()
    precisions: tp.Tuple[str, ...] = ("fp32", "fp16")  # exported precisions; others fall back to fp32
    role: str = "runtime"  # runtime: the pipeline runs it; extra: exported on request (--graphs), checked only

    @property
    def fp16(self) -> bool:
        return "fp16" in self.precisions

    def shape(self, spec: TensorSpec, sizes: tp.Dict[str, int]) -> tp.Tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)

    def sample(self, sizes: tp.Dict[str, int], generator: torch.Generator) -> tp.Dict[str, torch.Tensor]:
        """Random inputs of the given axis sizes (ids in the vocabulary, masks of ones)."""
        out = {}
        for spec in self.inputs:
            shape = self.shape(spec, sizes)
            if spec.name == "input_ids":
                out[spec.name] = torch.randint(2, getattr(self, "vocab_size", 32), shape, generator=generator)
            elif spec.name == "attention_mask":
                out[spec.name] = torch.ones(shape, dtype=torch.int64)
            elif spec.name == "t":
                out[spec.name] = torch.rand(shape, generator=generator)
            elif spec.name == "wav":
                out[spec.name] = 0.1 * torch.randn(shape, generator=generator)
            else:
                out[spec.name] = torch.randn(shape, generator=generator)
        return out

    def runtime_shapes(self) -> tp.List[tp.Dict[str, tp.Tuple[int, ...]]]:
        """The extreme feeds the runtime sends (every dynamic axis at its min, then at its max): the
        runtime chunks batches to the profile's max and refuses longer prompts, so these bound its use."""
        return [{s.name: self.shape(s, {k: getattr(r, end) for k, r in self.axes.items()}) for s in self.inputs}
                for end in ("min", "max")]

    @property
    def input_names(self) -> tp.List[str]:
        return [s.name for s in self.inputs]

    def profile_shapes(self) -> tp.Dict[str, tp.Tuple[tp.Tuple[int, ...], tp.Tuple[int, ...], tp.Tuple[int, ...]]]:
        """input name → (min, opt, max) shapes: the TensorRT optimisation profile."""
        return {s.name: tuple(self.shape(s, {k: getattr(r, end) for k, r in self.axes.items()})  # type: ignore[misc]
                              for end in ("min", "opt", "max")) for s in self.inputs}

    def to_manifest(self) -> GraphRecord:
        """This graph's manifest record (no artifacts yet: each is added as it is written)."""
        return GraphRecord(self.name, self.role, tuple(self.precisions),
                           [TensorRecord(s.name, s.dtype, tuple(s.shape)) for s in self.inputs],
                           [TensorRecord(s.name, s.dtype, tuple(s.shape)) for s in self.outputs],
                           {k: AxisRecord(v.min, v.opt, v.max) for k, v in self.axes.items()}, self.description)


# -- wrappers with explicit tensor I/O ---------------------------------------------------------------
class TextEncoder(nn.Module):
    def __init__(self, t5: nn.Module, output_proj: nn.Linear):
        super().__init__()
        self.t5 = t5
        self.output_proj = output_proj

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.t5(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.output_proj(hidden) * attention_mask.unsqueeze(-1).to(hidden.dtype)


class DrumsEncoder(nn.Module):
    """EnCodec encoder → nearest layer-0 codebook entry → codebook vector → blur → output_proj."""

    def __init__(self, drums_conditioner: nn.Module):
        super().__init__()
        self.cond = drums_conditioner

    def forward(self, wav: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        codes = self.cond.drum_codes(wav, int16_roundtrip=False)
        return self.cond.output_proj(self.cond.codes_to_latents(codes)), codes


class FlowStep(nn.Module):
    def __init__(self, flow: FlowModel, temporal: tp.Sequence[str]):
        super().__init__()
        self.flow = flow
        self.temporal = list(temporal)

    def forward(self, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor, *temporal: torch.Tensor) -> torch.Tensor:
        conds = {"description": (text, text[..., 0])}
        for name, value in zip(self.temporal, temporal):
            conds[name] = (value, value[..., 0])
        return self.flow(z, t, conds)


class SolverStep(nn.Module):
    """The host-side arithmetic of one ODE evaluation, as a graph, so a GPU solve keeps its state on the device
    (the layout of ``c`` and the summation order: jasco_runtime/stage_layout.py).

    The multi-source CFG sum of audiocraft's ``_multi_source_cfg_postprocess`` (models/flow_matching.py) over the
    flow step's rows of each prompt (``weights`` per prompt and term; one term weighs 1: unweighted) gives ``v``;
    the Runge-Kutta stage input ``z = base + Σ_j slot_j · c_j`` over the derivative slots ``k0`` … ``k6`` (``v``
    in the slot ``c`` marks), in the order of the runtime's numpy stepper (jasco_runtime/solvers.py ``_rk_step``,
    torch's CPU sum); ``z`` repeated once per CFG term as the next evaluation's rows; and per prompt
    ``Σ (z / (atol + rtol·max(|a|, |b|)))²``, the squared sum behind torchdiffeq's RMS error norm (dopri5's error
    ratio and initial step; _impl/rk_common.py, _impl/misc.py).

    A continued long-song window (audiocraft solvers/jasco.py ``_z`` / ``_vector_field``; the reference's
    longform.continuation): on the frames where ``keep`` is 1 the field is the path's constant ``velocity`` and the
    next evaluation sees the path ``(1 − (1 − σ_min)·t)·noise + t·known`` at the time ``c[SEEN]`` instead of the
    state; ``keep`` all 0 is an unconstrained solve."""

    def __init__(self, sigma_min: float):
        super().__init__()
        self.path_rate = 1 - sigma_min

    def forward(self, v_rows: torch.Tensor, weights: torch.Tensor, base: torch.Tensor, k0: torch.Tensor,
                k1: torch.Tensor, k2: torch.Tensor, k3: torch.Tensor, k4: torch.Tensor, k5: torch.Tensor,
                k6: torch.Tensor, c: torch.Tensor, keep: torch.Tensor, velocity: torch.Tensor, noise: torch.Tensor,
                known: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        kept = keep > 0.5
        v = torch.where(kept, velocity, (v_rows * weights[:, :, None, None]).sum(dim=1))
        slots = (k0, k1, k2, k3, k4, k5, k6)
        terms = [torch.where(c[stage_layout.V_SLOT + j] > 0.5, v, k) * c[stage_layout.COEF + j]
                 for j, k in enumerate(slots)]
        total = terms[stage_layout.SUM_ORDER[0]]
        for j in stage_layout.SUM_ORDER[1:]:
            total = total + terms[j]
        z = base + total
        t = c[stage_layout.SEEN]
        seen = torch.where(kept, (1 - self.path_rate * t) * noise + t * known, z)
        scaled = z / (c[stage_layout.ATOL] + c[stage_layout.RTOL] * torch.maximum(a.abs(), b.abs()))
        return v, z, seen.unsqueeze(1).expand_as(v_rows), (scaled * scaled).sum(dim=(1, 2))


class EncodecDecoder(nn.Module):
    """Normalized latents [B, T, D] → audio; folds audiocraft's latent un-normalisation in."""

    def __init__(self, decoder: nn.Module, mean: float, std: float):
        super().__init__()
        self.decoder = decoder
        self.mean, self.std = float(mean), float(std)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder((latents * self.std + self.mean).permute(0, 2, 1))


class EncodecEncoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(wav)


TEMPORAL_NAMES = {"chords": "chords", "self_wav": "drums", "melody": "melody"}
"""Conditioner name → graph input name of the flow step."""


MAX_DURATION = 60.0
"""Longest song (seconds) the decoder's ``frames`` axis is exported for by default (windowed long-form
generation); the export records it as ``audio.max_duration`` and the runtime reads it from there only."""


def declare_graphs(jasco: "JASCO", max_batch: int = 6, max_text_tokens: int = 128,
                   opt_batch: int = 3, opt_text_tokens: int = 16,
                   max_duration: float = MAX_DURATION) -> tp.Dict[str, GraphSpec]:
    """Every graph of a loaded model (role ``extra`` ones included).  ``max_batch`` counts CFG rows
    (prompts × terms); ``max_duration`` bounds the decoder's dynamic ``frames`` axis (from one window,
    T frames, up to that many seconds)."""
    model = jasco.model
    conds = model.condition_provider.conditioners
    cfg = jasco.cfg
    T = jasco.n_frames
    S = int(cfg.segment_duration * cfg.sample_rate)
    dim = cfg.transformer.dim
    batch = ProfileRange(1, opt_batch, max_batch)
    text_len = ProfileRange(1, opt_text_tokens, max_text_tokens)
    graphs: tp.Dict[str, GraphSpec] = {}

    t5c = conds["description"]
    text = GraphSpec(
        "text_encoder", TextEncoder(t5c.t5, t5c.output_proj),
        [TensorSpec("input_ids", "int64", ("batch", "text_len")), TensorSpec("attention_mask", "int64", ("batch", "text_len"))],
        [TensorSpec("text", "float32", ("batch", "text_len", dim))],
        {"batch": batch, "text_len": text_len},
        "T5 encoder + output_proj, padded positions zeroed", fp32_ops=("T5 feed-forward", "LayerNorm", "Softmax"))
    text.vocab_size = int(t5c.t5.config.vocab_size)  # type: ignore[attr-defined]
    graphs["text_encoder"] = text

    temporal = [n for n in ("chords", "self_wav", "melody") if n in conds]
    dims = {"chords": cfg.transformer.chords_dim, "self_wav": cfg.transformer.drums_dim, "melody": cfg.transformer.melody_dim}
    if "self_wav" in conds:
        graphs["drums_encoder"] = GraphSpec(
            "drums_encoder", DrumsEncoder(conds["self_wav"]),
            [TensorSpec("wav", "float32", ("batch", 1, S))],
            [TensorSpec("drums", "float32", ("batch", T, dims["self_wav"])), TensorSpec("codes", "int64", ("batch", T))],
            {"batch": ProfileRange(1, 1, max_batch)},
            "EnCodec encoder, layer-0 RVQ argmin, codebook lookup, temporal blur, output_proj; kept fp32 "
            "(the argmin codes have small margins and flip in fp16; it runs once per generation)", precisions=("fp32",))
    graphs["flow_step"] = GraphSpec(
        "flow_step", FlowStep(model, temporal),
        [TensorSpec("z", "float32", ("batch", T, cfg.transformer.flow_dim)), TensorSpec("t", "float32", ("batch",)),
         TensorSpec("text", "float32", ("batch", "text_len", dim))]
        + [TensorSpec(TEMPORAL_NAMES[n], "float32", ("batch", T, dims[n])) for n in temporal],
        [TensorSpec("v", "float32", ("batch", T, cfg.transformer.flow_dim))],
        {"batch": batch, "text_len": text_len},
        "vector field v_θ(z, t | text, temporal conditions) for every CFG row",
        fp32_ops=("LayerNorm", "Softmax"), precisions=("fp32", "fp16", "int8"))
    flow_dim = cfg.transformer.flow_dim
    graphs["solver_step"] = GraphSpec(
        "solver_step", SolverStep(SIGMA_MIN),
        [TensorSpec("v_rows", "float32", ("batch", "terms", T, flow_dim)),
         TensorSpec("weights", "float32", ("batch", "terms")), TensorSpec("base", "float32", ("batch", T, flow_dim))]
        + [TensorSpec(n, "float32", ("batch", T, flow_dim)) for n in stage_layout.SLOT_NAMES]
        + [TensorSpec("c", "float32", (stage_layout.SIZE,)), TensorSpec("keep", "float32", ("batch", T, 1))]
        + [TensorSpec(n, "float32", ("batch", T, flow_dim)) for n in ("velocity", "noise", "known", "a", "b")],
        [TensorSpec("v", "float32", ("batch", T, flow_dim)), TensorSpec("z", "float32", ("batch", T, flow_dim)),
         TensorSpec("z_rows", "float32", ("batch", "terms", T, flow_dim)), TensorSpec("sq", "float32", ("batch",))],
        {"batch": ProfileRange(1, 1, max_batch), "terms": ProfileRange(1, 3, 3)},
        "CFG sum per prompt, a Runge-Kutta stage input over up to 7 derivatives (Euler, midpoint, Heun, dopri5), the "
        "error norm's squared sum and a long-song window's continuation, on the device (no weights; fp32)",
        precisions=("fp32",))
    if "self_wav" in conds and getattr(jasco, "separator", None) is not None:
        from ..reference.separation import single_model
        from .separator import declare_separator

        graphs["drums_separator"] = declare_separator(single_model(jasco.separator))
    comp = jasco.compression_model.model
    graphs["encodec_decoder"] = GraphSpec(
        "encodec_decoder", EncodecDecoder(comp.decoder, cfg.latent_mean, cfg.latent_std),
        [TensorSpec("latents", "float32", ("batch", "frames", cfg.latent_dim))],
        [TensorSpec("audio", "float32", ("batch", 1, "samples"))],
        {"batch": ProfileRange(1, 1, max(1, max_batch // 2)),
         "frames": ProfileRange(T, T, max(T, int(math.ceil(max_duration * jasco.frame_rate))))},
        "EnCodec decoder; latents·std + mean folded in; dynamic frames (convolutions + LSTM) so a long "
        "song decodes in one call")
    graphs["encodec_encoder"] = GraphSpec(
        "encodec_encoder", EncodecEncoder(comp.encoder),
        [TensorSpec("wav", "float32", ("batch", 1, S))],
        [TensorSpec("latents", "float32", ("batch", cfg.latent_dim, T))],
        {"batch": ProfileRange(1, 1, max(1, max_batch // 2))},
        "EnCodec encoder (continuous latents): audio → latents for users who edit or continue existing audio; "
        "not used by the pipeline, exported only with --graphs encodec_encoder", role="extra")
    return graphs
