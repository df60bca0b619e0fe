"""JASCO's conditioners: text (T5), chords, drums and melody.

Ports of audiocraft/modules/conditioners.py (T5Conditioner) and audiocraft/modules/jasco_conditioners.py
(ChordsEmbConditioner, DrumsConditioner, MelodyConditioner).  Each module maps an already batched,
tokenized input to ``(embedding [B, L, D], mask [B, L])``.  Names equal audiocraft's state-dict keys
(``condition_provider.conditioners.<name>.output_proj`` / ``.emb``); T5 is kept out of the state dict
like audiocraft does (it is loaded by name from transformers).
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn

Condition = tp.Tuple[torch.Tensor, torch.Tensor]


class T5Conditioner(nn.Module):
    """Frozen T5 encoder + ``output_proj``; padded positions are zeroed (audiocraft T5Conditioner)."""

    def __init__(self, name: str, t5_dim: int, output_dim: int):
        super().__init__()
        self.name = name
        self.output_proj = nn.Linear(t5_dim, output_dim)
        self.__dict__["t5"] = None  # attached by the loader; not part of the state dict
        self.__dict__["tokenizer"] = None

    def attach(self, t5: nn.Module, tokenizer: tp.Any) -> None:
        self.__dict__["t5"] = t5.eval()
        self.__dict__["tokenizer"] = tokenizer

    def tokenize(self, texts: tp.Sequence[tp.Optional[str]]) -> tp.Dict[str, torch.Tensor]:
        """Tokenize the whole batch together, padded to its longest entry (no truncation).

        Missing descriptions become "" (→ ``</s>`` only) and their attention mask is zeroed, so their
        embedding is 0 — and T5 itself runs with that zeroed mask, as in audiocraft.
        """
        if self.tokenizer is None:
            raise RuntimeError("T5 tokenizer not attached; load the model with jasco_export.get_pretrained")
        entries = [x if x is not None else "" for x in texts]
        inputs = self.tokenizer(entries, return_tensors="pt", padding=True)
        ids = inputs["input_ids"].to(torch.int64)
        mask = inputs["attention_mask"].to(torch.int64)
        for i, entry in enumerate(entries):
            if entry == "":
                mask[i, :] = 0
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, inputs: tp.Dict[str, torch.Tensor]) -> Condition:
        mask = inputs["attention_mask"]
        with torch.no_grad():
            hidden = self.t5(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        embeds = self.output_proj(hidden.to(self.output_proj.weight))
        return embeds * mask.unsqueeze(-1), mask


class ChordsConditioner(nn.Module):
    """Chord index per frame → learned embedding; ``card + 1`` rows, the last one is the null chord."""

    def __init__(self, card: int, out_dim: int):
        super().__init__()
        self.card = card
        self.emb = nn.Embedding(card + 1, out_dim)

    @property
    def null_chord(self) -> int:
        return self.card

    def forward(self, frame_chords: torch.Tensor) -> Condition:
        embeds = self.emb(frame_chords)
        return embeds, torch.ones_like(embeds[..., 0])


class MelodyConditioner(nn.Module):
    """Melody salience [B, bins, T] → ``output_proj`` over the bins → [B, T, out_dim]."""

    def __init__(self, card: int, out_dim: int):
        super().__init__()
        self.card = card
        self.output_proj = nn.Linear(card, out_dim)

    def forward(self, salience: torch.Tensor) -> Condition:
        embeds = self.output_proj(salience.permute(0, 2, 1))
        return embeds, torch.ones_like(embeds[..., 0])


def temporal_blur(z: torch.Tensor, factor: int) -> torch.Tensor:
    """Piecewise-constant blur of [B, T, C] over groups of ``factor`` frames.

    Reflect-pad on the right to a multiple of ``factor``, average each group, repeat it ``factor``
    times, crop to T (audiocraft DrumsConditioner._temporal_blur).
    """
    b, t, c = z.shape
    if t % factor:
        z = nn.functional.pad(z, (0, 0, 0, factor - t % factor), mode="reflect")
    z = z.reshape(b, -1, factor, c).sum(dim=2) / factor
    return z.unsqueeze(2).repeat(1, 1, factor, 1).reshape(b, -1, c)[:, :t]


class CompressionModel(nn.Module):
    """Holds a transformers ``EncodecModel`` under ``.model`` (audiocraft HFEncodecCompressionModel)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(torch.tensor(self.model.config.upsampling_ratios).prod().item())

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Un-normalised latents [B, D, T] → waveform [B, C, samples] (EnCodec decoder only)."""
        return self.model.decoder(latents)


class DrumsConditioner(nn.Module):
    """Drum stem → EnCodec encoder → first-codebook codes → codebook vectors → blur → ``output_proj``.

    audiocraft DrumsConditioner._get_wav_embedding.  The EnCodec used is the copy stored in the JASCO
    state dict (``compression_model``), shared with the final decoder.  A batch of length-≤1 waveforms
    (drums absent everywhere) gives zeros before the projection, i.e. the projection bias.
    """

    def __init__(self, out_dim: int, latent_dim: int = 128, blurring_factor: int = 3, seq_len: int = 500):
        super().__init__()
        self.latent_dim = latent_dim
        self.blurring_factor = blurring_factor
        self.seq_len = seq_len
        self.output_proj = nn.Linear(latent_dim, out_dim)
        self.compression_model: tp.Optional[CompressionModel] = None

    @torch.no_grad()
    def drum_codes(self, wav: torch.Tensor, int16_roundtrip: bool = True) -> torch.Tensor:
        """[B, 1, samples] → layer-0 RVQ codes [B, frames] (int64 via int16, as audiocraft).

        The int16 round trip is an identity for codebooks under 32768 entries; exported graphs skip it
        (``int16_roundtrip=False``) because TensorRT has no int16 tensors.
        """
        assert self.compression_model is not None, "compression model not attached"
        model = self.compression_model.model
        codes = model.quantizer.layers[0].encode(model.encoder(wav))
        return codes.to(torch.int16).to(torch.int64) if int16_roundtrip else codes

    @torch.no_grad()
    def distinct_drum_codes(self, wav: torch.Tensor) -> torch.Tensor:
        """``drum_codes`` of a CFG batch, each distinct waveform encoded once, alone.

        The rows repeat one stem (kept terms) and one zero wav (dropped terms), so this encodes two rows
        instead of 2-3 per prompt: the same codes (EnCodec's encoder is row-independent), at the memory of
        one 10-s row — the reference's peak at 400M was the EnCodec encoder over six rows (+2.3 GB).
        """
        distinct, inverse = torch.unique(wav, dim=0, return_inverse=True)
        return torch.cat([self.drum_codes(row[None]) for row in distinct])[inverse]

    @torch.no_grad()
    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Layer-0 codes [B, frames] → blurred codebook vectors [B, frames, latent_dim]."""
        assert self.compression_model is not None, "compression model not attached"
        latents = self.compression_model.model.quantizer.decode(codes.unsqueeze(0))  # [B, D, T]
        return temporal_blur(latents.permute(0, 2, 1), self.blurring_factor)

    def forward(self, wav: torch.Tensor) -> Condition:
        if wav.shape[-1] <= 1:
            latents = wav.new_zeros(wav.shape[0], self.seq_len, self.latent_dim)
        else:
            latents = self.codes_to_latents(self.distinct_drum_codes(wav))
        embeds = self.output_proj(latents.to(self.output_proj.weight))
        return embeds, torch.ones_like(embeds[..., 0])


class ConditionProvider(nn.Module):
    """Container whose ``conditioners`` ModuleDict mirrors audiocraft's ConditioningProvider."""

    def __init__(self, conditioners: tp.Dict[str, nn.Module]):
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)

    def forward(self, tokenized: tp.Dict[str, tp.Any]) -> tp.Dict[str, Condition]:
        return {name: self.conditioners[name](inputs) for name, inputs in tokenized.items()}
