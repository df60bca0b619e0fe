"""The ``drums_separator`` graph: htdemucs' network between its STFT and its inverse STFT.

``HTDemucs.forward`` (demucs/htdemucs.py) = STFT → network → inverse STFT + time branch.  ONNX has no
inverse STFT, so the graph is the network only, fed the mixture and its complex-as-channels
spectrogram, and returning the drums source of both branches; the runtime does the rest in numpy
(:mod:`jasco_runtime.separation`).  The network includes htdemucs' own input normalisation (mean / std
of the spectrogram and of the waveform) and the de-normalisation of its outputs.

I/O (C = audio channels, L = the model's training length, F = nfft/2, T = ceil(L / hop)):
  mix  [B, C, L], spec [B, 2C, F, T]  →  drums_spec [B, 2C, F, T], drums_wave [B, C, L]
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn

from .spec import GraphSpec, ProfileRange, TensorSpec


class SeparatorNetwork(nn.Module):
    """HTDemucs (cac, no Wiener filtering, eval mode) without its STFT/iSTFT, one source's outputs."""

    def __init__(self, model: nn.Module, source: str = "drums"):
        super().__init__()
        if not getattr(model, "cac", False) or getattr(model, "wiener_iters", 0):
            raise ValueError("the separator graph needs an HTDemucs with cac=True and wiener_iters=0 (htdemucs is)")
        self.model = model.eval()
        self.source = list(model.sources).index(source)

    def forward(self, mix: torch.Tensor, spec: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        # nn.MultiheadAttention's eval fast path (aten::_native_multi_head_attention) has no ONNX export
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self._forward(mix, spec)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    def _forward(self, mix: torch.Tensor, spec: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        x, xt = spec, mix
        B, _, Fq, T = x.shape
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        meant = xt.mean(dim=(1, 2), keepdim=True)
        stdt = xt.std(dim=(1, 2), keepdim=True)
        xt = (xt - meant) / (1e-5 + stdt)
        length = mix.shape[-1]
        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                x = x + m.freq_emb_scale * m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
            saved.append(x)
        if m.crosstransformer:
            if m.bottom_channels:
                b, c, f, t = x.shape
                x = m.channel_upsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = m.channel_upsampler_t(xt)
            x, xt = m.crosstransformer(x, xt)
            if m.bottom_channels:
                b, c, f, t = x.shape
                x = m.channel_downsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = m.channel_downsampler_t(xt)
        for idx, decode in enumerate(m.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)
        S = len(m.sources)
        x = x.view(B, S, -1, Fq, T)[:, self.source] * std + mean
        xt = xt.view(B, S, -1, length)[:, self.source] * stdt + meant
        return x, xt


def segment_samples(model: nn.Module) -> int:
    """HTDemucs' training length in samples (``int(segment · samplerate)``; 343980 for htdemucs' 7.8 s)."""
    return int(model.segment * model.samplerate)


def separator_record(model: nn.Module, name: str, max_batch: int) -> tp.Dict[str, tp.Any]:
    """The manifest record the runtime builds its :class:`jasco_runtime.separation.SeparatorConfig` from."""
    return {"name": name, "samplerate": int(model.samplerate), "audio_channels": int(model.audio_channels),
            "segment_samples": segment_samples(model), "nfft": int(model.nfft), "source": "drums",
            "sources": list(model.sources), "max_batch": int(max_batch),
            "apply_model": {"shifts": 1, "split": True, "overlap": 0.25, "transition_power": 1.0,
                            "shift_rng": "random.Random(seed).randint(0, samplerate // 2), seed 0"}}


def declare_separator(model: nn.Module, max_batch: int = 1) -> GraphSpec:
    """GraphSpec of ``drums_separator`` for a loaded HTDemucs (a bag of one model: pass ``bag.models[0]``)."""
    C, L = int(model.audio_channels), segment_samples(model)
    F, T = int(model.nfft) // 2, int(math.ceil(L / (int(model.nfft) // 4)))
    spec = GraphSpec(
        "drums_separator", SeparatorNetwork(model),
        [TensorSpec("mix", "float32", ("batch", C, L)), TensorSpec("spec", "float32", ("batch", 2 * C, F, T))],
        [TensorSpec("drums_spec", "float32", ("batch", 2 * C, F, T)), TensorSpec("drums_wave", "float32", ("batch", C, L))],
        {"batch": ProfileRange(1, 1, max(1, max_batch))},
        "htdemucs network (input normalisation, both branches, cross-transformer) between the numpy STFT and "
        "inverse STFT; the drums source of both branches (jasco_runtime.separation adds them)",
        fp32_ops=("LayerNorm", "Softmax", "input normalisation (ReduceMean, Sqrt)", "GELU (Erf)"),
        precisions=("fp32", "fp16"))
    return spec
