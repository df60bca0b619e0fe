"""One reference recording → JASCO's conditions: the chord progression, the lead melody's salience and the drums
audio, over the whole recording (long songs are framed per window by :mod:`jasco_runtime.longform`)."""
from __future__ import annotations

import logging
import time
import typing as tp
from dataclasses import dataclass, field

import numpy as np

from .. import chords as chords_mod
from . import chordino, lead, pitch_model, salience
from .audio import as_audio, mono_at

logger = logging.getLogger(__name__)
_MODEL: tp.Dict[str, pitch_model.PitchModel] = {}  # one onnxruntime session per process


def chords(audio: tp.Any, sample_rate: tp.Optional[int] = None,
           mapping: tp.Optional[tp.Mapping[str, int]] = None,
           sixths: chordino.SixthCheck = chordino.SixthCheck()) -> chords_mod.Progression:
    """Chordino's progression ``[(label, start_sec), ...]`` of a recording (a path, or [C, T] / [T] with its rate);
    with ``mapping`` (a model's chord vocabulary) labels are spelled as the mapping spells them. ``sixths``:
    the re-reading of fifthless ``X6`` labels (``SixthCheck(enabled=False)``: Chordino's labels unchanged)."""
    wav, sr = as_audio(audio, sample_rate)
    return chordino.to_vocabulary(chordino.run_chordino(wav, sr, sixths=sixths), mapping)


def _model() -> pitch_model.PitchModel:
    if "nmp" not in _MODEL:
        _MODEL["nmp"] = pitch_model.PitchModel()
    return _MODEL["nmp"]


def lead_rows(wav: np.ndarray, sample_rate: int, params: lead.LeadParams = lead.LeadParams()
              ) -> tp.Tuple[np.ndarray, np.ndarray]:
    """The lead's salience row (0 = MIDI 43, −1 = unvoiced) per pitch-model frame (86.13 frames/s), and the
    [T, 53] salience it was tracked on (basic-pitch's contour pooled per semitone, max with its note activation).
    Frames more than ``params.silence_db`` below the recording's level are unvoiced (:func:`lead.active_frames`)."""
    mono = mono_at(wav, sample_rate, pitch_model.SAMPLE_RATE)
    act = _model().activations(mono)
    first = salience.FIRST_MIDI - pitch_model.BASE_MIDI
    sal = np.maximum(act.semitones(), act.note)[:, first:first + salience.N_ROWS]
    levels = lead.fundamental_levels(mono, pitch_model.SAMPLE_RATE, pitch_model.HOP, sal.shape[0], salience.FIRST_MIDI,
                                     salience.N_ROWS)
    active = lead.active_frames(mono, pitch_model.HOP, sal.shape[0], params.silence_db)
    return lead.track(sal, levels, params, active), sal


def melody(audio: tp.Any, sample_rate: tp.Optional[int] = None, params: lead.LeadParams = lead.LeadParams()
           ) -> np.ndarray:
    """The lead melody of a recording as JASCO's melody condition: float32 [53, T] at 50 frames/s (rows MIDI 43–95,
    one-hot per voiced frame, zeros elsewhere), T = int(seconds · 50) — the format ``--melody`` takes."""
    wav, sr = as_audio(audio, sample_rate)
    rows, _ = lead_rows(wav, sr, params)
    n_frames = int(wav.shape[-1] / sr * salience.FRAME_RATE)
    return salience.resample_one_hot(salience.one_hot(rows), pitch_model.FRAME_RATE, n_frames)


@dataclass
class ReferenceConditions:
    """What a reference recording gives a generation; each part is None when not asked for."""

    chords: tp.Optional[chords_mod.Progression] = None  # [(label, start_sec), ...]
    melody: tp.Optional[np.ndarray] = None  # float32 [53, T] at 50 frames/s
    drums: tp.Optional[np.ndarray] = None  # [C, samples] (the mix unless a separator gave the drum stem)
    drums_sample_rate: tp.Optional[int] = None
    seconds: float = 0.0
    timings_s: tp.Dict[str, float] = field(default_factory=dict)

    def fill(self, request: tp.Any) -> tp.Any:
        """A copy of a :class:`~jasco_runtime.request.GenerationRequest` whose unset chords / melody / drums come
        from the reference (what the caller gave explicitly wins)."""
        from dataclasses import replace

        updates: tp.Dict[str, tp.Any] = {}
        if request.chords is None and self.chords is not None:
            updates["chords"] = self.chords
        if request.melody is None and self.melody is not None:
            updates["melody"] = self.melody
        if request.drums is None and self.drums is not None:
            updates.update(drums=self.drums, drums_sample_rate=self.drums_sample_rate)
        return replace(request, **updates)


def reference_conditions(audio: tp.Any, sample_rate: tp.Optional[int] = None, *, want_chords: bool = True,
                         want_melody: bool = True, want_drums: bool = True,
                         mapping: tp.Optional[tp.Mapping[str, int]] = None,
                         separate_drums: tp.Optional[tp.Callable[[np.ndarray, int], np.ndarray]] = None
                         ) -> ReferenceConditions:
    """Chords (Chordino), the lead melody and the drums of one recording, for a model with those conditioners.

    Drums: ``separate_drums(wav, rate) → [C, T]`` where a separator is available (htdemucs); otherwise the
    recording itself, which the drums conditioner encodes as it is (BEHAVIOUR.md §5: audiocraft always separated)."""
    wav, sr = as_audio(audio, sample_rate)
    out = ReferenceConditions(seconds=wav.shape[-1] / sr)
    if want_chords:
        clock = time.perf_counter()
        out.chords = chordino.to_vocabulary(chordino.run_chordino(wav, sr), mapping)
        out.timings_s["chords"] = time.perf_counter() - clock
    if want_melody:
        clock = time.perf_counter()
        out.melody = melody(wav, sr)
        out.timings_s["melody"] = time.perf_counter() - clock
    if want_drums:
        clock = time.perf_counter()
        if separate_drums is None:
            logger.info("drums from the reference mix itself (no drum separator); pass --drums for a drum stem")
            out.drums = wav
        else:
            out.drums = separate_drums(wav, sr)
        out.drums_sample_rate = sr
        out.timings_s["drums"] = time.perf_counter() - clock
    return out


def for_model(folder: tp.Any, audio: tp.Any, sample_rate: tp.Optional[int] = None, *, chords: bool = True,
              melody: bool = True, drums: bool = True) -> ReferenceConditions:
    """The conditions a model's conditioners take (an :class:`~jasco_runtime.export_folder.ExportFolder`), from a
    reference; ``chords`` / ``melody`` / ``drums`` False skip a part the caller gives itself."""
    from ..errors import InputError

    want_melody = melody and folder.has_melody
    if want_melody and int(folder.conditioners["melody"]["bins"]) != salience.N_ROWS:
        raise InputError(f"this model's melody has {folder.conditioners['melody']['bins']} bins; reference melodies "
                         f"are {salience.N_ROWS} rows (MIDI 43-95) — pass --melody instead")
    mapping = chords_mod.load_chord_mapping(folder.file("chords_mapping")) if chords and folder.has_chords else None
    return reference_conditions(audio, sample_rate, want_chords=chords and folder.has_chords, want_melody=want_melody,
                                want_drums=drums and folder.has_drums, mapping=mapping)


def for_request(folder: tp.Any, reference: tp.Any, request: tp.Any, sample_rate: tp.Optional[int] = None) -> tp.Any:
    """``request`` with its unset chords / melody / drums extracted from ``reference`` (a path, or an array with
    ``sample_rate``) for the model in ``folder``: the one call ``jasco-run --reference`` and
    ``JascoPipeline.generate(reference=...)`` make."""
    from ..errors import InputError
    import os

    if isinstance(reference, (str, os.PathLike)) and not os.path.isfile(reference):
        raise InputError(f"reference file {reference} does not exist")
    conds = for_model(folder, reference, sample_rate, chords=request.chords is None,
                      melody=request.melody is None, drums=request.drums is None)
    return conds.fill(request)
