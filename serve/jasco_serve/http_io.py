"""HTTP helpers of the ingress: the JSON error answer, bounded body reading, form parsing, the web files.

Kept outside the deployment module so Ray pickles them by reference (the ingress class itself is pickled by value).
"""
from __future__ import annotations

import importlib.resources
import re
import typing as tp

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from jasco_runtime.errors import InputError

from .inputs import FIELDS, UPLOADS

MAX_ERROR_CHARS = 300  # an error line is at most this long (the end cut with "…")
MAX_WORD_CHARS = 60  # and no run of characters without a space is longer (a quoted value is cut with "…")


def bounded(text: str, limit: int = MAX_ERROR_CHARS, word: int = MAX_WORD_CHARS) -> str:
    """One line of at most ``limit`` characters: line breaks and control characters become spaces, each
    space-free run longer than 60 characters is cut, and a longer text is cut, with "…" — so an error that
    quotes a huge field (or a file's bytes) never echoes it."""
    text = str(text)
    if len(text) > 34 * 1024:  # a huge quoted value: its start and the message's end (the fix) are enough
        text = text[:32 * 1024] + "… " + text[-1024:]
    text = re.sub(r"\S{%d,}" % (word + 1), lambda m: m.group(0)[:word - 1] + "…", text)
    line = " ".join("".join(c if c.isprintable() else " " for c in text[:4 * limit]).split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


class HTTPError(Exception):
    """An answer other than 200, raised inside a route; its message is :func:`bounded`."""

    def __init__(self, status: int, message: str, retry_after: tp.Optional[int] = None,
                 headers: tp.Optional[tp.Mapping[str, str]] = None):
        self.message = bounded(message)
        super().__init__(self.message)
        self.status, self.retry_after, self.headers = status, retry_after, dict(headers or {})

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers or None)


def unauthorized() -> HTTPError:
    return HTTPError(401, "missing or unknown API key; send the header Authorization: Bearer KEY",
                     headers={"WWW-Authenticate": 'Bearer realm="jasco-serve"'})

async def call(method: tp.Any) -> tp.Any:
    return await method.remote()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (413) without reading past it."""
    too_large = HTTPError(413, f"the request body is larger than the upload limit ({limit / 2**20:g} MiB); "
                               "send a shorter drums clip or raise --max-upload-mb")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, body: bytes, limit: int) -> tp.Tuple[tp.Dict[str, str], tp.Dict[str, bytes]]:
    """Parse a form body already read (and size-checked): text fields and uploaded files, each name once."""
    async def receive() -> tp.Dict[str, tp.Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=len(UPLOADS), max_fields=len(FIELDS) + len(UPLOADS),
                                                          max_part_size=limit)
    except Exception as exc:  # starlette raises HTTPException / MultiPartException on malformed forms
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        raise InputError(f"cannot parse the form ({detail}); send multipart/form-data with the fields of /v1/models") from None
    fields: tp.Dict[str, str] = {}
    files: tp.Dict[str, bytes] = {}
    for name, value in form.multi_items():
        if name in fields or name in files:
            raise InputError(f"field {name!r} is given twice; give each field once")
        if isinstance(value, UploadFile):
            if name not in UPLOADS:
                raise InputError(f"{name!r} is a file upload, but only {' and '.join(UPLOADS)} are files; "
                                 f"send {name} as a text field")
            files[name] = await value.read()
        else:
            fields[name] = value
    await form.close()
    return fields, files


def web_file(name: str) -> bytes:
    return importlib.resources.files("jasco_serve").joinpath("web", name).read_bytes()


def wants_json(accept: tp.Optional[str]) -> bool:
    """Whether an ``Accept`` header prefers ``application/json`` over the default ``audio/wav`` (RFC 9110 §12.5.1:
    media ranges are case-insensitive, ``q=0`` means "not acceptable", the most specific range sets a type's q)."""
    def quality(kind: str) -> float:
        best, specificity = 0.0, -1
        major = kind.split("/")[0]
        for part in (accept or "").split(","):
            fields = [f.strip() for f in part.split(";")]
            media = fields[0].lower()
            if not media:
                continue
            q = 1.0
            for f in fields[1:]:
                name, _, value = f.partition("=")
                if name.strip().lower() == "q":
                    try:
                        q = max(0.0, min(1.0, float(value)))
                    except ValueError:
                        q = 0.0
            rank = 2 if media == kind else 1 if media == f"{major}/*" else 0 if media == "*/*" else -1
            if rank > specificity:
                best, specificity = q, rank
        return best

    if not accept or not accept.strip():
        return False
    return quality("application/json") > quality("audio/wav")
