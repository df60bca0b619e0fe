"""Errors of the torch side; each message is one line naming the problem and the fix."""
from __future__ import annotations

try:  # share the base class with the runtime so one ``except JascoError`` catches both sides
    from jasco_runtime.errors import JascoError, InputError
except ImportError:  # pragma: no cover - the runtime package is part of the same distribution
    class JascoError(Exception):
        """Base class of every error jasco-trt raises on purpose."""

    class InputError(JascoError, ValueError):
        """Bad user input."""


class CheckpointError(JascoError):
    """A checkpoint is missing, corrupt or does not match the architecture."""


class ModelNotFoundError(JascoError):
    """A model id or directory cannot be resolved (offline cache miss, typo, ...)."""
