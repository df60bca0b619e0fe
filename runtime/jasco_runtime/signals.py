"""SIGINT and SIGTERM as exceptions, recorded, and held where an outcome must be all or nothing.

What ``timeout``, docker and Kubernetes send (SIGTERM) must clean up as Ctrl-C does, and every message about
an interrupted command must say what really happened.  So:

* :func:`interrupts` (and :func:`sigterm_interrupts`, SIGTERM only) turn the signals into exceptions in the
  main thread: :class:`Terminated` for SIGTERM, ``KeyboardInterrupt`` for SIGINT;
* every signal caught by a handler of this module is counted (:func:`received`), so code that calls a native
  library which swallows the exception (ONNX Runtime reports "initialization failed") can tell an interrupt
  from a real failure;
* :func:`signals_held` defers the signals over a short critical section (renaming finished outputs into
  place) and tells the caller which one arrived, so the outcome is all-or-nothing and the message matches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import typing as tp

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
_received: tp.List[int] = []  # every signal number caught by a handler of this module, in order


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (a KeyboardInterrupt, so every
    ``except BaseException`` / ``finally`` clean-up runs and CLIs report "interrupted")."""


def received() -> int:
    """How many SIGINT/SIGTERM the handlers of this module have caught so far (compare two readings)."""
    return len(_received)


def last_signal() -> tp.Optional[int]:
    return _received[-1] if _received else None


def exception_for(signum: int) -> KeyboardInterrupt:
    """The exception a signal raises here: :class:`Terminated` for SIGTERM, ``KeyboardInterrupt`` otherwise."""
    return Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise(signum: int, frame: tp.Any) -> None:
    _received.append(signum)
    raise exception_for(signum)


@contextlib.contextmanager
def _handlers(signums: tp.Sequence[int], handler: tp.Callable[[int, tp.Any], None]) -> tp.Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def install() -> None:
    """Install the raising handlers for good (a CLI's first statement, so Ctrl-C during start-up is counted)."""
    if threading.current_thread() is threading.main_thread():
        for s in NAMES:
            signal.signal(s, _raise)


@contextlib.contextmanager
def interrupts() -> tp.Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt``; both are counted."""
    with _handlers(tuple(NAMES), _raise):
        yield


@contextlib.contextmanager
def sigterm_interrupts() -> tp.Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op in other threads)."""
    with _handlers((signal.SIGTERM,), _raise):
        yield


@dataclasses.dataclass
class Held:
    """What :func:`signals_held` saw: the first signal that arrived inside the block, or None."""

    signum: tp.Optional[int] = None

    @property
    def name(self) -> tp.Optional[str]:
        return None if self.signum is None else NAMES.get(self.signum, f"signal {self.signum}")


@contextlib.contextmanager
def signals_held() -> tp.Iterator[Held]:
    """SIGINT/SIGTERM are recorded, not raised, inside the block (keep it short: renames, not computation);
    the caller reads ``held.signum`` afterwards and reports it."""
    held = Held()

    def record(signum: int, frame: tp.Any) -> None:
        _received.append(signum)
        if held.signum is None:
            held.signum = signum

    with _handlers(tuple(NAMES), record):
        yield held
