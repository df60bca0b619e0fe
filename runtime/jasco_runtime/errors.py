"""Errors raised on purpose by jasco-trt; each message is one line naming the problem and the fix."""
from __future__ import annotations


class JascoError(Exception):
    """Base class of every error jasco-trt raises on purpose."""


class InputError(JascoError, ValueError):
    """Bad user input (files, shapes, chord strings, options)."""
