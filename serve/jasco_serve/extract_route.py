"""``POST /v1/extract`` and the ``reference`` upload of ``/v1/generate``: conditions from a song
(:mod:`jasco_runtime.extract`, docs/extract.md).

``/v1/extract`` takes a multipart form with an ``audio`` file (or the audio itself as the body, ``Content-Type:
audio/*``) and optional fields ``what`` (comma list of ``chords``, ``melody``; default both) and ``format``
(``json`` default, or ``npy``: the melody salience file itself). JSON answer::

    {"chords": [["C", 0.232], ...], "chords_text": "C:0.232 ...", "seconds": 12.0,
     "melody": {"rows": [r0, r1, ...], "first_midi": 43, "frame_rate": 50, "shape": [53, T]},
     "timings_s": {...}}

``rows`` is the salience row per 50-fps frame (MIDI = first_midi + row; −1 = no melody). Errors: 400 bad audio or
field, 413 over the upload limit, 415 other content types, 501 when the server lacks the ``extract`` extra, 503
while ``MAX_CONCURRENT`` extractions already run. Extraction runs in the ingress process on a worker thread
(CPU, a few seconds per minute of audio; no engines involved).
"""
from __future__ import annotations

import asyncio
import io
import typing as tp

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from jasco_runtime import audio_io
from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import ExportFolder

from .http_io import HTTPError, read_body

MAX_CONCURRENT = 2
EXTRACT_FIELDS = ("what", "format")
_slots = asyncio.Semaphore(MAX_CONCURRENT)


def _read_upload(data: bytes, source: str) -> tp.Tuple[np.ndarray, int]:
    return audio_io.read_audio_bytes(data, source)


def extract_conditions(data: bytes, folder: tp.Optional[ExportFolder], what: tp.Sequence[str]) -> tp.Dict[str, tp.Any]:
    """Audio bytes → the JSON answer of ``/v1/extract`` (labels spelled as ``folder``'s chord vocabulary)."""
    from jasco_runtime import chords as chords_mod, extract
    from jasco_runtime.extract import salience
    from jasco_runtime.extract.cli import progression_text

    wav, sr = _read_upload(data, "audio upload")
    mapping = (chords_mod.load_chord_mapping(folder.file("chords_mapping"))
               if folder is not None and folder.has_chords else None)
    out: tp.Dict[str, tp.Any] = {"seconds": round(wav.shape[-1] / sr, 4)}
    conds = extract.reference_conditions(wav, sr, want_chords="chords" in what, want_melody="melody" in what,
                                         want_drums=False, mapping=mapping)
    if conds.chords is not None:
        out["chords"] = [[label, start] for label, start in conds.chords]
        out["chords_text"] = progression_text(conds.chords)
    if conds.melody is not None:
        rows = np.where(conds.melody.max(axis=0) > 0, conds.melody.argmax(axis=0), -1)
        out["melody"] = {"rows": rows.astype(int).tolist(), "first_midi": salience.FIRST_MIDI,
                         "frame_rate": salience.FRAME_RATE, "shape": list(conds.melody.shape)}
        out["_salience"] = conds.melody
    out["timings_s"] = {k: round(v, 4) for k, v in conds.timings_s.items()}
    return out


def _what(value: tp.Optional[str]) -> tp.List[str]:
    parts = [p.strip() for p in (value or "chords,melody").split(",") if p.strip()]
    bad = [p for p in parts if p not in ("chords", "melody")]
    if bad or not parts:
        raise InputError(f"what={value!r}: give a comma list of chords, melody (e.g. what=chords,melody)")
    return parts


async def extract(request: Request, folder: ExportFolder, max_upload_bytes: int) -> Response:
    """The ``/v1/extract`` route body."""
    body = await read_body(request, max_upload_bytes)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind.startswith("audio/") or kind == "application/octet-stream":
            data, fields = body, {k: v for k, v in request.query_params.items()}
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            data, fields = await _form(request, body, max_upload_bytes)
        else:
            raise HTTPError(415, f"unsupported content type {kind!r}; send multipart/form-data with an audio file "
                                 "(field 'audio') or the audio itself with Content-Type audio/*")
        unknown = sorted(set(fields) - set(EXTRACT_FIELDS))
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; /v1/extract takes audio, what, format")
        fmt = fields.get("format") or "json"
        if fmt not in ("json", "npy"):
            raise InputError(f"unknown format {fmt!r}; use json or npy")
        what = _what(fields.get("what"))
        if fmt == "npy" and "melody" not in what:
            raise InputError("format=npy returns the melody salience; ask for what=melody")
        if _slots.locked():
            raise HTTPError(503, f"{MAX_CONCURRENT} extractions are already running; retry in a few seconds",
                            retry_after=5)
        async with _slots:
            result = await asyncio.to_thread(extract_conditions, data, folder, what)
    except InputError as exc:
        raise HTTPError(400, str(exc)) from None
    except ImportError as exc:  # scipy / onnxruntime missing on the server
        raise HTTPError(501, f"the server cannot extract ({exc}); install the 'extract' extra (docs/extract.md)") from None
    except Exception as exc:
        from jasco_runtime.extract import MissingExtra

        if isinstance(exc, MissingExtra):
            raise HTTPError(501, f"the server cannot extract: {exc}") from None
        raise
    salience = result.pop("_salience", None)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, salience)
        return Response(buf.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="melody.npy"'})
    return JSONResponse(result)


async def _form(request: Request, body: bytes, limit: int) -> tp.Tuple[bytes, tp.Dict[str, str]]:
    from starlette.datastructures import UploadFile

    async def receive() -> tp.Dict[str, tp.Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=len(EXTRACT_FIELDS) + 1,
                                                          max_part_size=limit)
    except Exception as exc:  # starlette's MultiPartException / HTTPException on malformed forms
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        raise InputError(f"cannot parse the form ({detail}); send multipart/form-data with an 'audio' file") from None
    data: tp.Optional[bytes] = None
    fields: tp.Dict[str, str] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "audio":
                raise InputError(f"{name!r} is a file upload; /v1/extract takes one file, 'audio'")
            data = await value.read()
        elif name in fields:
            raise InputError(f"field {name!r} is given twice; give each field once")
        else:
            fields[name] = value
    await form.close()
    if data is None:
        raise InputError("no 'audio' file in the form; upload the song as the field 'audio'")
    return data, fields


# -- the reference upload of /v1/generate ------------------------------------------------------------------------
def apply_reference(folder: ExportFolder, request: tp.Any, data: bytes) -> tp.Any:
    """A resolved request (:class:`~jasco_runtime.request.ResolvedRequest`) with its unset chords / melody / drums
    extracted from the uploaded song, before :meth:`ConditionProvider.prepare` checks and fits them."""
    from jasco_runtime.extract import MissingExtra
    from jasco_runtime.extract.reference import for_request

    wav, sr = _read_upload(data, "reference upload")
    try:
        return for_request(folder, wav, request, sample_rate=sr)
    except MissingExtra as exc:
        raise InputError(f"the server cannot use a reference: {exc}") from None
