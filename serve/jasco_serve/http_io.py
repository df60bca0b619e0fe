"""HTTP helpers of the ingress: the JSON error answer, bounded body reading, form parsing, the web files.

Kept outside the deployment module so Ray pickles them by reference (the ingress class itself is pickled by value).
"""
from __future__ import annotations

import importlib.resources
import typing as tp

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from jasco_runtime.errors import InputError

from .inputs import FIELDS, UPLOADS


class HTTPError(Exception):
    """An answer other than 200, raised inside a route."""

    def __init__(self, status: int, message: str, retry_after: tp.Optional[int] = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)

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
