"""HTTP input → a validated :class:`GenerationRequest`, before anything is queued.

Every setting goes through :meth:`GenerationRequest.resolved` (the checks ``jasco-run`` runs); the inputs a
generation would reject later are checked here too, with the runtime's own functions: the chord progression
is parsed and framed (:mod:`jasco_runtime.chords`), the drums upload decoded and prepared as the pipeline
prepares a drum stem (:func:`audio_io.prepare_drums`), the melody upload read as a salience matrix, and the
prompt tokenized against the text profile. Each failure is an :class:`InputError` with one line.

Fields (JSON body or multipart form): ``text``, ``chords`` ("C:0 F:4" or [["C", 0], ["F", 4]]),
``cfg_coef_all``, ``cfg_coef_txt``, ``solver``, ``steps``, ``rtol``, ``atol``, ``seed``, ``duration``,
``format`` ("float" | "pcm16"), ``normalize`` ("peak" | "loudness"), ``drums_stem`` (true: the drums upload is
already a drum stem, skip the export's htdemucs separation; default: separate when the export has a separator);
multipart also ``drums`` (audio file) and ``melody`` (.npy).
"""
from __future__ import annotations

import importlib.util
import json
import numbers
import secrets
import typing as tp
from dataclasses import dataclass

import numpy as np

from jasco_runtime import audio_io, chords as chords_mod, longform, separation
from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import ExportFolder
from jasco_runtime.request import GenerationRequest
from jasco_runtime.text import TextTokenizer

FORMATS = {"float": "FLOAT", "pcm16": "PCM_16"}
NORMALIZE = ("peak", "loudness")
FIELDS = ("text", "chords", "cfg_coef_all", "cfg_coef_txt", "solver", "steps", "rtol", "atol", "seed", "duration", "overlap",
          "format", "normalize", "drums_stem")
UPLOADS = ("drums", "melody")
_FLOAT_FIELDS = ("cfg_coef_all", "cfg_coef_txt", "rtol", "atol", "duration", "overlap")
_INT_FIELDS = ("steps", "seed")
SEED_RANGE = 2 ** 31  # server-picked seeds: small enough to type back


@dataclass
class ParsedRequest:
    """A request ready to queue: the resolved generation settings and how to encode the answer."""

    request: GenerationRequest  # resolved: defaults filled, seed set
    subtype: str  # soundfile subtype of the wav
    normalize: tp.Optional[str]

    @property
    def seed(self) -> int:
        return int(tp.cast(int, self.request.seed))


class InputChecker:
    """Validates requests for one export folder (manifest, tokenizer and chord mapping; no engines)."""

    def __init__(self, folder: ExportFolder):
        self.folder = folder
        self.tokenizer = TextTokenizer(folder.file("tokenizer"))
        self.chords_mapping = chords_mod.load_chord_mapping(folder.file("chords_mapping")) if folder.has_chords else {}
        self.max_text_tokens = folder.graphs["text_encoder"].max_size("text_len")

    # -- bodies -------------------------------------------------------------------------------------
    def from_json(self, body: bytes) -> ParsedRequest:
        try:
            values = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"the request body is not valid JSON ({_first_line(exc)}); send an object such as "
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
        return self.build(values, drums=files.get("drums"), melody=files.get("melody"))

    # -- the request --------------------------------------------------------------------------------
    def build(self, values: tp.Mapping[str, tp.Any], drums: tp.Optional[bytes] = None,
              melody: tp.Optional[bytes] = None) -> ParsedRequest:
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; accepted fields: {', '.join(FIELDS + UPLOADS)}")
        if "text" not in values:
            raise InputError('the "text" field is missing; give a description (it may be empty)')
        text = values["text"]
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        fmt = values.get("format", "float")
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; use float or pcm16")
        normalize = values.get("normalize")
        if normalize is not None and normalize not in NORMALIZE:
            raise InputError(f"unknown normalize {normalize!r}; use peak or loudness (or leave it out)")
        if normalize == "loudness" and importlib.util.find_spec("pyloudnorm") is None:
            raise InputError("loudness normalisation needs pyloudnorm on the server; use normalize peak")
        seed = values.get("seed")
        req = GenerationRequest(
            [text], chords=self._chords(values.get("chords")), cfg_coef_all=values.get("cfg_coef_all"),
            cfg_coef_txt=values.get("cfg_coef_txt"), solver=values.get("solver"), steps=values.get("steps"),
            rtol=values.get("rtol"), atol=values.get("atol"),
            seed=secrets.randbelow(SEED_RANGE) if seed is None else seed, duration=values.get("duration"),
            overlap=values.get("overlap"),
        ).resolved(self.folder.defaults)
        self._check_duration(req.duration, req.overlap)
        self._check_text(text)
        if drums is not None:
            req.drums, req.drums_sample_rate = self._drums(drums, req.duration), self.folder.sample_rate
        req.drums_stem = self._drums_stem(values.get("drums_stem"), drums is not None)
        if melody is not None:
            req.melody = self._melody(melody)
        return ParsedRequest(req, FORMATS[fmt], normalize)

    def _check_duration(self, duration: tp.Optional[float], overlap: tp.Optional[float]) -> None:
        """Songs longer than one window (README "Longer songs"): the plan is checked before queueing."""
        if duration is not None or overlap is not None:
            longform.plan_for_folder(self.folder, self.folder.duration if duration is None else duration, overlap)

    def _check_text(self, text: str) -> None:
        ids, _ = self.tokenizer([text])
        if self.max_text_tokens is not None and ids.shape[1] > self.max_text_tokens:
            raise InputError(f"the prompt is {ids.shape[1]} T5 tokens long, the exported engines take at most "
                             f"{self.max_text_tokens}; shorten it")

    def _chords(self, value: tp.Any) -> tp.Optional[chords_mod.Progression]:
        """A progression string or [[label, start], ...] → [(label, start)], framed once to catch errors."""
        if value is None:
            return None
        if isinstance(value, str):
            progression = chords_mod.parse_chords_text(value)
        elif isinstance(value, list):
            progression = []
            for item in value:
                if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                        and isinstance(item[1], numbers.Real) and not isinstance(item[1], bool)):
                    raise InputError(f'chords entry {item!r} is not [label, start_seconds]; e.g. [["C", 0], ["F", 4]]')
                progression.append((item[0], float(item[1])))
        else:
            raise InputError(f'chords must be a string such as "C:0 F:4" or a list [["C", 0], ["F", 4]], '
                             f"got {type(value).__name__}")
        if self.folder.has_chords and progression:
            f = self.folder
            chords_mod.frame_chords(progression, self.chords_mapping, f.frame_rate, f.duration)
        return progression or None

    def _drums_stem(self, value: tp.Any, has_drums: bool) -> tp.Optional[bool]:
        """``drums_stem``: true / false (JSON booleans, or form text true/false/on/1/0) or absent."""
        if value is None:
            return None
        if isinstance(value, str):
            value = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(value.lower(), value)
        if not isinstance(value, bool):
            raise InputError(f"drums_stem must be true or false, got {value!r}")
        if not has_drums:
            raise InputError("drums_stem says how to treat the drums upload; upload drums or drop drums_stem")
        if value is False and separation.folder_separator(self.folder) is None:
            raise InputError("this model's export has no drum separator; drop drums_stem=false (the upload is then "
                             "taken as a drum stem)")
        return value

    def _drums(self, data: bytes, duration: tp.Optional[float] = None) -> np.ndarray:
        """The drums upload → mono float32 at the model rate, one window (or ``duration``) long."""
        if not self.folder.has_drums:
            raise InputError("this model has no drums conditioner; drop the drums upload")
        wav, sr = audio_io.read_audio_bytes(data, "drums upload")
        return audio_io.prepare_drums(wav, sr, self.folder.sample_rate, max(duration or 0.0, self.folder.duration))

    def _melody(self, data: bytes) -> np.ndarray:
        if not self.folder.has_melody:
            raise InputError("this model has no melody conditioner (melody is only for chords-drums-melody models); "
                             "drop the melody upload")
        return audio_io.read_melody_bytes(data, int(self.folder.conditioners["melody"]["bins"]))


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
            raise InputError(f'chords {raw!r} is not a valid JSON list ({_first_line(exc)}); e.g. [["C", 0], ["F", 4]]') from exc
    return raw


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
