"""The U-Net transformer of JASCO's flow model.

Port of audiocraft/modules/transformer.py (StreamingTransformerLayer, StreamingMultiheadAttention in
its "custom" packed-projection form, create_sin_embedding) and audiocraft/modules/unet_transformer.py
(UnetTransformer), restricted to what inference of the released models uses: non-causal attention,
no streaming, no dropout.  Parameter names equal audiocraft's so release state dicts load strictly.
"""
from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10_000.0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding ``cat([cos, sin])`` with shape [B, T, dim] (note: cos first).

    audiocraft/modules/transformer.py ``create_sin_embedding``.
    """
    assert dim % 2 == 0
    half = dim // 2
    positions = positions.to(dtype)
    adim = torch.arange(half, device=positions.device, dtype=dtype).view(1, 1, -1)
    period = torch.full([], max_period, device=positions.device, dtype=dtype)
    phase = positions / (period ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class LayerScale(nn.Module):
    """Per-channel residual scale (Touvron et al. 2021); audiocraft ``LayerScale``."""

    def __init__(self, channels: int, init: float = 1e-4):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class MultiheadAttention(nn.Module):
    """Multi-head attention with a packed ``in_proj_weight`` [3·dim, dim] split into q, k, v.

    Non-causal, no key mask: JASCO's cross-attention attends to every text position, padding included
    (spec/BEHAVIOUR.md §7).  Uses torch scaled-dot-product attention like audiocraft's torch backend.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, qk_layer_norm: bool = False):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.qk_layer_norm = qk_layer_norm
        if qk_layer_norm:
            self.q_layer_norm = nn.LayerNorm(dim)
            self.k_layer_norm = nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3, dim=0)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3, dim=0)
        q = F.linear(query, w_q, b_q)
        k = F.linear(key_value, w_k, b_k)
        v = F.linear(key_value, w_v, b_v)
        if self.qk_layer_norm:
            q = self.q_layer_norm(q)
            k = self.k_layer_norm(k)
        x = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        b, h, t, d = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, t, h * d))


_ACTIVATIONS: tp.Dict[str, tp.Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU, as nn.TransformerEncoderLayer("gelu")
    "relu": F.relu,
}


class TransformerLayer(nn.Module):
    """audiocraft ``StreamingTransformerLayer``: self-attention, cross-attention, feed-forward."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.dim
        if cfg.activation not in _ACTIVATIONS:
            raise ValueError(f"activation {cfg.activation!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        self.norm_first = cfg.norm_first
        self.activation = _ACTIVATIONS[cfg.activation]
        self.self_attn = MultiheadAttention(d, cfg.num_heads, cfg.bias_attn, cfg.qk_layer_norm)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward, bias=cfg.bias_ff)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d, bias=cfg.bias_ff)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        scaled = cfg.layer_scale is not None
        self.layer_scale_1 = LayerScale(d, cfg.layer_scale) if scaled else nn.Identity()
        self.layer_scale_2 = LayerScale(d, cfg.layer_scale) if scaled else nn.Identity()
        self.cross_attention: tp.Optional[MultiheadAttention] = None
        if cfg.cross_attention:
            self.cross_attention = MultiheadAttention(d, cfg.num_heads, cfg.bias_attn, cfg.qk_layer_norm_cross)
            self.norm_cross = nn.LayerNorm(d, eps=1e-5)
            self.layer_scale_cross = LayerScale(d, cfg.layer_scale) if scaled else nn.Identity()

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation(self.linear1(x)))

    def forward(self, x: torch.Tensor, cross_src: tp.Optional[torch.Tensor]) -> torch.Tensor:
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.layer_scale_1(self.self_attn(h, h))
            if self.cross_attention is not None:
                x = x + self.layer_scale_cross(self.cross_attention(self.norm_cross(x), cross_src))
            return x + self.layer_scale_2(self._ff(self.norm2(x)))
        src = x
        x = self.norm1(x + self.layer_scale_1(self.self_attn(x, x)))
        if self.cross_attention is not None:
            # audiocraft quirk (post-norm branch): the cross-attention queries come from the layer
            # input ``src``, not from the output of the self-attention block.
            x = self.norm_cross(x + self.layer_scale_cross(self.cross_attention(src, cross_src)))
        return self.norm2(x + self.layer_scale_2(self._ff(x)))


class UnetTransformer(nn.Module):
    """audiocraft ``UnetTransformer``: sinusoidal positions, layers, optional U-Net skip connections."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_layers)])
        self.skip_connect = cfg.skip_connections
        if self.skip_connect:
            self.skip_projections = nn.ModuleList(
                [nn.Linear(2 * cfg.dim, cfg.dim) for _ in range(cfg.num_layers // 2)])

    def forward(self, x: torch.Tensor, cross_src: tp.Optional[torch.Tensor]) -> torch.Tensor:
        _, t, c = x.shape
        positions = torch.arange(t, device=x.device).view(1, -1, 1)
        x = x + self.cfg.positional_scale * sin_embedding(positions, c, self.cfg.max_period, x.dtype)
        n = len(self.layers)
        skips: tp.List[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if self.skip_connect and i >= n // 2:
                x = self.skip_projections[i % len(self.skip_projections)](torch.cat([x, skips.pop()], dim=-1))
            x = layer(x, cross_src)
            if self.skip_connect and i < n // 2:
                skips.append(x)
        return x
