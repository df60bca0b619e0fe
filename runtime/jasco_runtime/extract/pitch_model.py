"""basic-pitch's trained pitch model (R. Bittner et al., "A lightweight instrument-agnostic model for polyphonic
note transcription and multipitch estimation", ICASSP 2022) on ONNX Runtime, no TensorFlow.

The model takes 2-s windows (43 844 samples at 22 050 Hz) and returns, per window, 172 frames (hop 256 samples,
86.13 frames/s) of ``contour`` salience (264 bins, 3 per semitone from A0 = MIDI 21), ``note`` and ``onset``
(88 semitones). The whole recording is windowed as basic-pitch's ``inference.run_inference`` does: 30 frames of
overlap, half of it padded before the start and trimmed from each window's edges, so frame ``i`` sits at
``i · 256 / 22050`` seconds.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

from .audio import mono_at
from .deps import onnxruntime_module, pitch_model_path

SAMPLE_RATE = 22050
HOP = 256
FRAME_RATE = SAMPLE_RATE / HOP  # 86.13 frames/s
WINDOW = 2 * SAMPLE_RATE - HOP  # 43 844 samples → 172 frames
OVERLAP_FRAMES = 30
BASE_MIDI = 21  # A0, the first contour bin
BINS_PER_SEMITONE = 3
N_SEMITONES = 88
WINDOWS_PER_RUN = 16  # windows per onnxruntime call (bounded memory on long songs)


@dataclass
class PitchActivations:
    """Per-frame outputs at :data:`FRAME_RATE` over the whole recording."""

    contour: np.ndarray  # [T, 264] salience, 3 bins per semitone from MIDI 21
    note: np.ndarray  # [T, 88] note activation, MIDI 21..108

    def semitones(self) -> np.ndarray:
        """[T, 88] salience per semitone (MIDI 21..108): the max of the 3 contour bins centred on each semitone."""
        c = self.contour
        padded = np.pad(c, ((0, 0), (1, 1)))  # bin 3k is the semitone's centre: pool bins 3k-1, 3k, 3k+1
        return padded[:, :3 * N_SEMITONES].reshape(c.shape[0], N_SEMITONES, 3).max(axis=-1)


class PitchModel:
    """One onnxruntime session of ``nmp.onnx`` (230 KB, CPU execution provider)."""

    def __init__(self, path: tp.Optional[str] = None, threads: int = 0):
        ort = onnxruntime_module()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path or pitch_model_path()), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        outs = {o.shape[-1]: o.name for o in self.session.get_outputs()}
        self.contour_name = outs[BINS_PER_SEMITONE * N_SEMITONES]
        # note and onset are both [.., 88]: the graph names them StatefulPartitionedCall:1 (note), :2 (onset)
        self.note_name = sorted(o.name for o in self.session.get_outputs() if o.shape[-1] == N_SEMITONES)[0]

    def __call__(self, wav: np.ndarray, sample_rate: int) -> PitchActivations:
        """Audio [C, T] / [T] at any rate → activations over the whole recording."""
        return self.activations(mono_at(wav, sample_rate, SAMPLE_RATE))

    def activations(self, audio: np.ndarray) -> PitchActivations:
        """Mono float32 audio at :data:`SAMPLE_RATE` → activations over the whole recording."""
        overlap = OVERLAP_FRAMES * HOP
        hop = WINDOW - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio])
        starts = range(0, padded.shape[0], hop)
        contour, note = [], []
        trim = OVERLAP_FRAMES // 2
        for first in range(0, len(starts), WINDOWS_PER_RUN):
            batch = np.zeros((len(starts[first:first + WINDOWS_PER_RUN]), WINDOW, 1), np.float32)
            for j, s in enumerate(starts[first:first + WINDOWS_PER_RUN]):
                chunk = padded[s:s + WINDOW]
                batch[j, :chunk.shape[0], 0] = chunk
            c, n = self.session.run([self.contour_name, self.note_name], {self.input: batch})
            contour.append(c[:, trim:-trim].reshape(-1, c.shape[-1]))
            note.append(n[:, trim:-trim].reshape(-1, n.shape[-1]))
        n_frames = int(np.floor(audio.shape[0] * FRAME_RATE / SAMPLE_RATE))
        return PitchActivations(np.concatenate(contour)[:n_frames], np.concatenate(note)[:n_frames])
