"""JASCO's vector-field estimator (the flow model).

Port of audiocraft/models/flow_matching.py ``FlowMatchingModel.forward`` and the ConditionFuser of
audiocraft/modules/conditioners.py.  Parameter names equal audiocraft's (``emb``, ``transformer``,
``out_norm``, ``linear``, ``temb.dense``, ``temb_proj``, ``condition_provider``).
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn

from .config import TEMPORAL_CONDITIONS, JascoConfig
from .transformer import UnetTransformer, sin_embedding

ConditionTensors = tp.Dict[str, tp.Tuple[torch.Tensor, torch.Tensor]]
"""Conditioner name → (embedding [B, L, D], mask [B, L]), as audiocraft's ConditioningProvider returns."""


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal time embedding ``cat([sin, cos])``, frequencies exp(−ln(1e4)·i/(dim/2 − 1)).

    audiocraft FlowMatchingModel._get_timestep_embedding (from the DDPM/LDM code base).
    """
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1)))
    t = t if t.dtype == torch.float32 else t.float()  # no Cast node in exported graphs
    emb = t[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


def align_length(cond: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad a [B, T, C] condition to ``length`` frames (after projection: pads are 0)."""
    cond = cond[:, :length, :]
    b, t, c = cond.shape
    if t < length:
        cond = torch.cat([cond, cond.new_zeros(b, length - t, c)], dim=1)
    return cond


class FlowModel(nn.Module):
    """v_θ(z, t | conditions) → vector field [B, T, flow_dim]."""

    def __init__(self, cfg: JascoConfig, condition_provider: tp.Optional[nn.Module] = None):
        super().__init__()
        tc = cfg.transformer
        self.cfg = cfg
        if condition_provider is not None:
            self.condition_provider = condition_provider
        self.flow_dim = tc.flow_dim
        in_dim = tc.flow_dim + tc.chords_dim + tc.drums_dim + tc.melody_dim
        self.emb = nn.Linear(in_dim, tc.dim, bias=False)
        self.transformer = UnetTransformer(tc)
        self.out_norm: tp.Optional[nn.LayerNorm] = nn.LayerNorm(tc.dim, eps=1e-5) if tc.norm_first else None
        self.linear = nn.Linear(tc.dim, tc.flow_dim, bias=tc.bias_proj)
        self.d_temb1 = tc.time_embedding_dim
        self.d_temb2 = 4 * tc.time_embedding_dim
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(self.d_temb1, self.d_temb2), nn.Linear(self.d_temb2, self.d_temb2)])
        self.temb_proj = nn.Linear(self.d_temb2, tc.dim)
        fuse = cfg.fuser
        self._fuse_op = {}
        for op in ("sum", "input_interpolate", "prepend", "cross", "ignore"):
            for name in getattr(fuse, op):
                self._fuse_op[name] = op

    # -- pieces -----------------------------------------------------------------------------------
    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """temb = dense1(swish(dense0(sinusoid(t)))) → [n, 4·d_temb]."""
        temb = timestep_embedding(t.flatten(), self.d_temb1)
        temb = self.temb.dense[0](temb)
        temb = temb * torch.sigmoid(temb)
        return self.temb.dense[1](temb)

    def fuse(self, x: torch.Tensor, conditions: ConditionTensors) -> tp.Tuple[torch.Tensor, tp.Optional[torch.Tensor]]:
        """audiocraft ConditionFuser.forward (non-streaming), iterating conditions in dict order."""
        cross = None
        for name, (cond, _mask) in conditions.items():
            op = self._fuse_op.get(name)
            if op is None:
                raise KeyError(f"condition {name!r} has no fuse method in the config")
            if op == "sum":
                x = x + cond
            elif op == "input_interpolate":
                c = nn.functional.interpolate(cond.transpose(1, 2), size=x.shape[1])
                x = x + c.transpose(1, 2)
            elif op == "prepend":
                x = torch.cat([cond, x], dim=1)
            elif op == "cross":
                cross = cond if cross is None else torch.cat([cross, cond], dim=1)
        if self.cfg.fuser.cross_attention_pos_emb and cross is not None:
            pos = torch.arange(cross.shape[1], device=cross.device).view(1, -1, 1)
            cross = cross + self.cfg.fuser.cross_attention_pos_emb_scale * sin_embedding(pos, cross.shape[-1])
        return x, cross

    def forward(self, latents: torch.Tensor, t: torch.Tensor, conditions: ConditionTensors) -> torch.Tensor:
        """Vector field for noisy ``latents`` [B, T, D] at time ``t`` ([1] or [B]).

        The temporal conditions are concatenated to the latents in audiocraft's JascoCondConst.ALL order
        (chords, self_wav, melody), each cropped / zero-padded to T; the time embedding is added to the
        cross-attention source (every text position), not to the main stream (BEHAVIOUR.md §8–9).
        """
        _, T, _ = latents.shape
        x = latents
        for name in TEMPORAL_CONDITIONS:
            if name in conditions:
                x = torch.cat([x, align_length(conditions[name][0], T)], dim=-1)
        x = self.emb(x)
        x, cross = self.fuse(x, conditions)
        cross = cross + self.temb_proj(self.embed_time(t)[:, None, :])
        out = self.transformer(x, cross)
        if self.out_norm is not None:
            out = self.out_norm(out)
        v = self.linear(out)
        if self.cfg.fuser.prepend:
            v = v[:, :, -T:]  # audiocraft slices the feature axis here; reproduced as is
        return v
