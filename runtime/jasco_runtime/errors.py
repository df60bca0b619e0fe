"""Errors raised on purpose by jasco-trt; each message is one line naming the problem and the fix."""
from __future__ import annotations


class JascoError(Exception):
    """Base class of every error jasco-trt raises on purpose."""


class InputError(JascoError, ValueError):
    """Bad user input (files, shapes, chord strings, options)."""


def first_line(exc: BaseException, limit: int = 0) -> str:
    """The first non-empty line of ``str(exc)`` (the exception's type name when it has no text), cut to
    ``limit`` characters when ``limit`` > 0: how every message quotes a library's error in one line."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:limit] if limit > 0 else line


class Cancelled(JascoError):
    """The caller cancelled the generation (a timed-out or disconnected request)."""
