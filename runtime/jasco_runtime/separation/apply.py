"""``demucs.apply.apply_model`` in numpy, as audiocraft calls it (defaults: one shift, split, 25 % overlap).

audiocraft's ``DrumsConditioner._get_drums_stem`` (audiocraft/modules/jasco_conditioners.py) calls
``apply_model(htdemucs, wav, device=...)``: ``shifts=1, split=True, overlap=0.25, transition_power=1``,
``segment=None`` (the model's own, 7.8 s for htdemucs).  The pretrained ``htdemucs`` is a bag of one model
with weight 1, so the bag's weighting is the identity.  What that call does (demucs/apply.py):

* **shift**: zero-pad ``max_shift = 0.5 s`` on both sides, draw ``offset = random.randint(0, max_shift)``
  from Python's *global* RNG, separate ``padded[offset : offset + length + max_shift − offset]`` and keep
  the output from ``max_shift − offset`` on.  Here the draw comes from ``random.Random(seed)``, which gives
  the same offset as ``random.seed(seed)`` before demucs' call (audiocraft never seeds it: its separation
  varies run to run by up to half a second of shift).
* **split**: segments of ``segment_length = int(samplerate · segment)`` samples every
  ``stride = int(0.75 · segment_length)``; each chunk shorter than the segment is padded *centred* with the
  neighbouring samples of the shifted signal's underlying buffer (zeros beyond it), the model's output
  centre-trimmed back; outputs are summed with triangular weights (1 … n/2, n − n/2 … 1, over its max,
  ^transition_power) and divided by the summed weights.
"""
from __future__ import annotations

import random
import typing as tp
from dataclasses import dataclass

import numpy as np

ModelFn = tp.Callable[[np.ndarray], np.ndarray]
"""[B, C, segment_length] float32 → [B, C, segment_length] float32 (one source, e.g. the drums)."""


@dataclass(frozen=True)
class ApplyOptions:
    """The arguments audiocraft leaves at apply_model's defaults (demucs 4.1.0)."""

    shifts: int = 1
    split: bool = True
    overlap: float = 0.25
    transition_power: float = 1.0
    seed: int = 0  # random.Random(seed) draws the shift offsets (audiocraft: unseeded global random)


def _padded(buf: np.ndarray, offset: int, length: int, target: int) -> np.ndarray:
    """demucs' ``TensorChunk(buf, offset, length).padded(target)``: the chunk centred in ``target`` samples,
    context taken from ``buf`` where it exists, zeros beyond."""
    delta = target - length
    assert delta >= 0
    start = offset - delta // 2
    end = start + target
    lo, hi = max(0, start), min(buf.shape[-1], end)
    out = buf[..., lo:hi]
    if lo - start or end - hi:
        out = np.pad(out, [(0, 0)] * (buf.ndim - 1) + [(lo - start, end - hi)])
    return out


def transition_weights(segment_length: int, power: float = 1.0) -> np.ndarray:
    """The triangular chunk weights of apply_model (float32, as torch computes them)."""
    half = segment_length // 2
    w = np.concatenate([np.arange(1, half + 1), np.arange(segment_length - half, 0, -1)]).astype(np.float32)
    return (w / w.max()) ** np.float32(power)


def _split(model: ModelFn, buf: np.ndarray, offset: int, length: int, segment_length: int, overlap: float,
           power: float) -> np.ndarray:
    """The ``split`` branch on the chunk ``buf[..., offset:offset + length]``."""
    out = np.zeros(buf.shape[:-1] + (length,), np.float32)
    total = np.zeros(length, np.float32)
    stride = int((1 - overlap) * segment_length)
    weight = transition_weights(segment_length, power)
    for start in range(0, length, stride):
        n = min(length - start, segment_length)
        chunk = model(_padded(buf, offset + start, n, segment_length))
        delta = chunk.shape[-1] - n  # demucs.utils.center_trim
        chunk = chunk[..., delta // 2:delta // 2 + n]
        out[..., start:start + n] += weight[:n] * chunk
        total[start:start + n] += weight[:n]
    assert total.min() > 0
    return out / total


def apply_model(model: ModelFn, mix: np.ndarray, samplerate: int, segment_length: int,
                options: ApplyOptions = ApplyOptions()) -> np.ndarray:
    """[B, C, L] mixture → [B, C, L] separated source, as ``demucs.apply.apply_model`` with ``options``."""
    mix = np.asarray(mix, dtype=np.float32)
    length = mix.shape[-1]
    if not options.split:
        raise NotImplementedError("apply_model without split is not used by audiocraft")
    if not options.shifts:
        return _split(model, mix, 0, length, segment_length, options.overlap, options.transition_power)
    rng = random.Random(options.seed)
    max_shift = int(0.5 * samplerate)
    padded = _padded(mix, 0, length, length + 2 * max_shift)
    out = np.zeros_like(mix)
    for _ in range(options.shifts):
        offset = rng.randint(0, max_shift)
        res = _split(model, padded, offset, length + max_shift - offset, segment_length, options.overlap,
                     options.transition_power)
        out += res[..., max_shift - offset:]
    return out / options.shifts
