"""HTTP input → a prepared request (:class:`~jasco_runtime.conditioning.PreparedRequest`), before anything is
queued.

The wire values are typed here (JSON or form fields, uploads decoded); everything else is the runtime's one
validator, run once: :meth:`GenerationRequest.resolved` for the settings and
:meth:`ConditionProvider.prepare` for the inputs (chords framed, drums resampled and fitted, melody salience,
prompt tokenized against the text profile, window plan).  The generator runs the prepared request as it is and
never re-validates.  Each failure is an :class:`InputError` with one line.

Fields (JSON body or multipart form): ``text``, ``chords`` ("C:0 F:4" or [["C", 0], ["F", 4]]),
``cfg_coef_all``, ``cfg_coef_txt``, ``solver``, ``steps``, ``rtol``, ``atol``, ``seed``, ``duration``,
``format`` ("float" | "pcm16"), ``normalize`` ("peak" | "loudness"), ``drums_stem`` (true: the drums upload is
already a drum stem, skip the export's htdemucs separation; default: separate when the export has a separator);
multipart also ``drums`` (audio file),
``melody`` (.npy) and ``reference`` (a song: the unset conditions are extracted from it, docs/extract.md).
"""
from __future__ import annotations

import importlib.util
import json
import typing as tp
from dataclasses import dataclass

import numpy as np

from jasco_runtime import audio_io, chords as chords_mod, separation
from jasco_runtime.conditioning import ConditionProvider, PreparedRequest
from jasco_runtime.errors import InputError, first_line
from jasco_runtime.generation import draw_seed
from jasco_runtime.export_folder import ExportFolder
from jasco_runtime.request import GenerationRequest

FORMATS = {"float": "FLOAT", "pcm16": "PCM_16"}
NORMALIZE = ("peak", "loudness")
FIELDS = ("text", "chords", "cfg_coef_all", "cfg_coef_txt", "solver", "steps", "rtol", "atol", "seed", "duration", "overlap",
          "format", "normalize", "drums_stem")
UPLOADS = ("drums", "melody", "reference")  # reference: a song, conditions extracted from it (extract_route.py)
_FLOAT_FIELDS = ("cfg_coef_all", "cfg_coef_txt", "rtol", "atol", "duration", "overlap")
_INT_FIELDS = ("steps", "seed")


@dataclass
class ParsedRequest:
    """A request ready to queue: the resolved generation settings and how to encode the answer."""

    request: PreparedRequest  # resolved (defaults filled, seed set) and prepared
    subtype: str  # soundfile subtype of the wav
    normalize: tp.Optional[str]

    @property
    def seed(self) -> int:
        return int(tp.cast(int, self.request.request.seed))


class InputChecker:
    """Validates requests for one export folder (manifest, tokenizer and chord mapping; no engines)."""

    def __init__(self, folder: ExportFolder):
        self.folder = folder
        self.conditioner = ConditionProvider(folder, uploads=True)
        self.max_duration = folder.max_duration

    # -- bodies -------------------------------------------------------------------------------------
    def from_json(self, body: bytes) -> ParsedRequest:
        try:
            values = json.loads(body.decode("utf-8"))
        except RecursionError:  # H38: 100 000 nested "[" (json's recursion limit), not a 500
            raise InputError("the JSON body is nested too deeply; send an object of plain fields such as "
                             '{"text": "funky groove", "chords": "C:0 F:4"}') from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"the request body is not valid JSON ({first_line(exc)}); send an object such as "
                             '{"text": "funky groove", "chords": "C:0 F:4"}') from exc
        if not isinstance(values, dict):
            raise InputError(f"the JSON body must be an object of fields, got {type(values).__name__}; "
                             'e.g. {"text": "funky groove"}')
        bad = sorted(set(values) & set(UPLOADS))
        if bad:
            raise InputError(f"{bad[0]} is an upload: send it as a file in a multipart/form-data request")
        return self.build(values)

    def from_form(self, fields: tp.Mapping[str, str], files: tp.Mapping[str, bytes]) -> ParsedRequest:
        """Form fields arrive as text: numbers are parsed here, empty fields mean "default"."""
        values: tp.Dict[str, tp.Any] = {}
        if any(name.lstrip().startswith(("{", "[")) for name in fields):
            raise InputError("the body looks like JSON but was sent as a form; set the header "
                             "Content-Type: application/json")
        for name, raw in fields.items():
            if name in UPLOADS:
                raise InputError(f"{name} must be a file upload (multipart/form-data with a filename), not a text field")
            if raw == "" and name != "text":
                continue
            values[name] = _form_value(name, raw)
        return self.build(values, drums=files.get("drums"), melody=files.get("melody"), reference=files.get("reference"))

    # -- the request --------------------------------------------------------------------------------
    def build(self, values: tp.Mapping[str, tp.Any], drums: tp.Optional[bytes] = None,
              melody: tp.Optional[bytes] = None, reference: tp.Optional[bytes] = None) -> ParsedRequest:
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; accepted fields: {', '.join(FIELDS + UPLOADS)}")
        if "text" not in values:
            raise InputError('the "text" field is missing; give a description (it may be empty)')
        text = values["text"]
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        fmt = values.get("format", "float")
        if not isinstance(fmt, str) or fmt not in FORMATS:  # H25: a list here was a 500 (unhashable)
            raise InputError(f"unknown format {_short(fmt)}; use float or pcm16")
        normalize = values.get("normalize")
        if normalize is not None and (not isinstance(normalize, str) or normalize not in NORMALIZE):
            raise InputError(f"unknown normalize {_short(normalize)}; use peak or loudness (or leave it out)")
        if normalize == "loudness" and importlib.util.find_spec("pyloudnorm") is None:
            raise InputError("loudness normalisation needs pyloudnorm on the server; use normalize peak")
        seed = values.get("seed")
        req = GenerationRequest(
            [text], chords=self._chords(values.get("chords")), cfg_coef_all=values.get("cfg_coef_all"),
            cfg_coef_txt=values.get("cfg_coef_txt"), solver=values.get("solver"), steps=values.get("steps"),
            rtol=values.get("rtol"), atol=values.get("atol"),
            seed=draw_seed() if seed is None else seed, duration=values.get("duration"),
            overlap=values.get("overlap"),
            **self._drums(drums, values.get("duration")), melody=self._melody(melody),
            drums_stem=self._drums_stem(values.get("drums_stem"), drums is not None),
        ).resolved(self.folder.defaults)
        if reference is not None:  # unset chords / melody / drums from the song (extract_route.py)
            from .extract_route import apply_reference

            req = apply_reference(self.folder, req, reference)
        prepared = self.conditioner.prepare(req)
        seconds = prepared.plan.n_samples / self.folder.sample_rate
        if normalize == "loudness" and seconds < audio_io.LOUDNESS_MIN_SECONDS:  # H47: pyloudnorm's 0.4-s block
            raise InputError(f"loudness normalisation needs at least {audio_io.LOUDNESS_MIN_SECONDS:g} s of audio "
                             f"(one ITU-R BS.1770 block), the request is {seconds:g} s; use normalize peak or a "
                             "longer duration")
        return ParsedRequest(prepared, FORMATS[fmt], normalize)

    def _chords(self, value: tp.Any) -> tp.Optional[chords_mod.Progression]:
        """A progression string or [[label, start], ...] → [(label, start)] (checked by ``prepare``)."""
        if value is None:
            return None
        if isinstance(value, str):
            return chords_mod.parse_chords_text(value) or None
        return chords_mod.progression(value) or None

    def _drums(self, data: tp.Optional[bytes], duration: tp.Any) -> tp.Dict[str, tp.Any]:
        """The drums upload decoded only as far as the song needs (``prepare`` resamples and fits it once), so a
        request's memory is bounded by the longest song, not by the upload's length."""
        if data is None:
            return {}
        seconds = self.folder.duration
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration == duration:
            seconds = max(seconds, min(float(duration), self.max_duration))
        wav, sr = audio_io.read_audio_bytes(data, "drums upload", max_seconds=seconds + audio_io.RESAMPLE_MARGIN_S)
        return {"drums": wav, "drums_sample_rate": sr}

    def _drums_stem(self, value: tp.Any, has_drums: bool) -> tp.Optional[bool]:
        """``drums_stem``: true / false (JSON booleans, or form text true/false/on/1/0) or absent."""
        if value is None:
            return None
        if isinstance(value, str):
            value = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(value.lower(), value)
        if not isinstance(value, bool):
            raise InputError(f"drums_stem must be true or false, got {_short(value)}")
        if not has_drums:
            raise InputError("drums_stem says how to treat the drums upload; upload drums or drop drums_stem")
        if value is False and separation.folder_separator(self.folder) is None:
            raise InputError("this model's export has no drum separator; drop drums_stem=false (the upload is then "
                             "taken as a drum stem)")
        return value

    def _melody(self, data: tp.Optional[bytes]) -> tp.Optional[np.ndarray]:
        """The melody upload's array (``prepare`` checks the model has a melody conditioner and the salience shape)."""
        if data is None:
            return None
        return audio_io.read_npy_bytes(data, "melody upload")


def _short(value: tp.Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _form_value(name: str, raw: str) -> tp.Any:
    """A form field's text → the JSON value it stands for (numbers parsed; chords may be a JSON list)."""
    raw = raw.strip() if name != "text" else raw
    if name in _INT_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{name} must be an integer, got {raw!r}") from None
    if name in _FLOAT_FIELDS:
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{name} must be a number, got {raw!r}") from None
    if name == "chords" and raw.startswith("["):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InputError(f'chords {raw!r} is not a valid JSON list ({first_line(exc)}); e.g. [["C", 0], ["F", 4]]') from exc
    return raw


