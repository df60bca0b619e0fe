"""Drum-stem separation with the exported htdemucs graph (``drums_separator``), torch-free.

audiocraft separates every drums input before EnCodec (audiocraft/modules/jasco_conditioners.py,
``DrumsConditioner._get_drums_stem``)::

    wav = convert_audio(wav, 32000, 44100, 2)      # demucs.audio: channels first, then julius.resample_frac
    stems = apply_model(htdemucs, wav)             # shifts=1, split, overlap 0.25 (see apply.py)
    drums = convert_audio(stems[:, drums], 44100, 32000, 1)

The graph holds the network only (its input normalisation, both branches, the cross-transformer, the
drums source's outputs); the STFT, the inverse STFT, the time/frequency sum (HTDemucs.forward's last
lines), the segmentation and the resampling run here in numpy.
"""
from __future__ import annotations

import typing as tp
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from ..resample import resample_frac
from . import stft
from .apply import ApplyOptions, apply_model

GRAPH = "drums_separator"
Engine = tp.Callable[..., tp.Dict[str, np.ndarray]]  # engine(mix=..., spec=...) -> {"drums_spec", "drums_wave"}


@dataclass(frozen=True)
class SeparatorConfig:
    """What the runtime needs to know about the exported separator (manifest record ``separator``)."""

    samplerate: int = 44100
    audio_channels: int = 2
    segment_samples: int = 343980  # int(samplerate · segment): htdemucs' training length (7.8 s)
    nfft: int = 4096
    source: str = "drums"
    name: str = "htdemucs"
    max_batch: int = 1

    @classmethod
    def from_record(cls, record: tp.Mapping[str, tp.Any]) -> "SeparatorConfig":
        return cls(**{k: record[k] for k in asdict(cls()) if k in record})

    def to_record(self) -> tp.Dict[str, tp.Any]:
        return asdict(self)


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """demucs.audio.convert_audio_channels: [..., C, L] → [..., channels, L] (mean to mono, mono repeated,
    extra channels dropped)."""
    src = wav.shape[-2]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=-2, keepdims=True)
    if src == 1:
        return np.repeat(wav, channels, axis=-2)
    if src >= channels:
        return wav[..., :channels, :]
    raise InputError(f"the drums have {src} channels; the separator needs mono or at least {channels}")


def network(engine: Engine, cfg: SeparatorConfig) -> tp.Callable[[np.ndarray], np.ndarray]:
    """HTDemucs.forward around the graph: [B, C, L ≤ segment] → the drums source [B, C, L] (eval mode:
    right-padded with zeros to the training length, then cropped)."""
    def run(mix: np.ndarray) -> np.ndarray:
        length = mix.shape[-1]
        full = cfg.segment_samples
        if length > full:
            raise ValueError(f"chunk of {length} samples is longer than the separator's segment ({full})")
        if length < full:
            mix = np.pad(mix, [(0, 0)] * (mix.ndim - 1) + [(0, full - length)])
        mix = np.ascontiguousarray(mix, dtype=np.float32)
        spec = stft.to_cac(stft.htdemucs_spec(mix, cfg.nfft))
        outs = [engine(mix=mix[i:i + cfg.max_batch], spec=spec[i:i + cfg.max_batch])
                for i in range(0, mix.shape[0], max(1, cfg.max_batch))]
        zout = np.concatenate([o["drums_spec"] for o in outs])
        wave = np.concatenate([o["drums_wave"] for o in outs])
        x = stft.htdemucs_ispec(stft.from_cac(zout), full)
        return (wave + x)[..., :length].astype(np.float32)
    return run


def separate(engine: Engine, mix: np.ndarray, cfg: SeparatorConfig, options: ApplyOptions = ApplyOptions()) -> np.ndarray:
    """[B, C, L] mixture at the separator's rate and channels → [B, C, L] drums (apply_model)."""
    return apply_model(network(engine, cfg), mix, cfg.samplerate, cfg.segment_samples, options)


def separate_drums(wav: np.ndarray, sample_rate: int, engine: Engine, cfg: SeparatorConfig = SeparatorConfig(),
                   target_rate: int = 32000, options: ApplyOptions = ApplyOptions()) -> np.ndarray:
    """audiocraft's ``_get_drums_stem`` on one input: [C, S] (or [S]) at ``sample_rate`` → mono float32 drums
    [S'] at ``target_rate`` (S' = julius' length of S at the new rate, round trip included).

    Give it the drum input as the pipeline prepared it (32 kHz mono, trimmed / padded to the song) to match
    audiocraft, which separates after that preparation.  Memory is bounded by one segment per graph call
    plus the whole song at 44.1 kHz stereo (≈ 0.7 MB per second of audio)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[-1] == 0:
        raise InputError(f"drums must be [channels, samples] audio, got shape {list(wav.shape)}")
    mix = resample_frac(convert_channels(wav, cfg.audio_channels), int(sample_rate), cfg.samplerate)
    drums = separate(engine, mix[None], cfg, options)[0]
    return resample_frac(convert_channels(drums, 1), cfg.samplerate, int(target_rate))[0]


def folder_separator(folder: tp.Any) -> tp.Optional[SeparatorConfig]:
    """The export folder's separator (manifest ``conditioners.drums.separator``), or None."""
    record = folder.conditioners.get("drums", {}).get("separator") if folder.has_drums else None
    return SeparatorConfig.from_record(record) if record else None


def separate_prepared(folder: tp.Any, engines: tp.Any, wav: np.ndarray, stem: tp.Optional[bool] = None,
                      timings: tp.Optional[tp.Dict[str, float]] = None) -> np.ndarray:
    """The pipeline's hook: the prepared drums (mono, model rate, trimmed / padded to the song) → the drums
    the encoder gets.  ``stem``: None separates when the folder has a separator (audiocraft's behaviour),
    True takes the input as an already separated stem, False requires separation."""
    cfg = folder_separator(folder)
    if stem is True:
        return wav
    if cfg is None:
        if stem is False:
            raise InputError(f"{folder.folder} has no drum separator; re-export with `jasco-export --separator htdemucs`, "
                             "or pass the drums as an already separated stem (--drums-stem)")
        return wav
    import time

    start = time.perf_counter()
    out = separate_drums(wav, folder.sample_rate, engines[GRAPH], cfg, target_rate=folder.sample_rate)
    out = np.pad(out, (0, max(0, wav.shape[-1] - out.shape[-1])))[:wav.shape[-1]]  # julius' floor, both ways
    if timings is not None:
        timings[GRAPH] = time.perf_counter() - start
    return out
