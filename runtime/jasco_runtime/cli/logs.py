"""Logging for the CLIs: warnings (and progress with ``--verbose``) go to stderr as one line each, prefixed
with the command; library code only logs (``logging.getLogger(__name__)``), so a library user can silence it."""
from __future__ import annotations

import logging
import sys


class _OneLine(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split("\n"))
        return f"{self.prog}: {record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING \
            else f"{self.prog}: {text}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (not the stream of the moment it was made)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(prog: str, verbose: bool = False) -> None:
    """Route the ``jasco_runtime``/``jasco_export`` loggers to stderr (INFO with ``verbose``, else WARNING)."""
    handler = _Stderr()
    handler.setFormatter(_OneLine(prog))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_jasco_cli", False):
            root.removeHandler(h)
    handler._jasco_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def show_progress_bars(disabled: bool) -> bool:
    """tqdm bars only on a terminal: piped stderr (CI logs, supervisors) gets no carriage-return noise."""
    return not disabled and sys.stderr.isatty()
