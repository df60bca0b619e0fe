"""SIGINT and SIGTERM as exceptions, recorded, and held where an outcome must be all or nothing.

What ``timeout``, docker and Kubernetes send (SIGTERM) must clean up as Ctrl-C does, and every message about
an interrupted command must say what really happened.  So:

* :func:`interrupts` (and :func:`sigterm_interrupts`, SIGTERM only) turn the signals into exceptions in the
  main thread: :class:`Terminated` for SIGTERM, ``KeyboardInterrupt`` for SIGINT;
* every signal caught by a handler of this module is counted (:func:`received`), so code that calls a native
  library which swallows the exception (ONNX Runtime reports "initialization failed") can tell an interrupt
  from a real failure;
* :func:`signals_held` defers the signals over a short critical section (renaming finished outputs into
  place) and tells the caller which one arrived, so the outcome is all-or-nothing and the message matches;
* :func:`settle`, inside a :func:`settling` scope (a command's run), marks the outcome final: from then until
  the scope ends the raising handlers record a signal (:func:`take_late`) instead of raising it, so a signal
  after the outputs exist can neither say "nothing was written" nor end in a traceback (S09/S10);
* a signal whose exception Python or a native library swallowed is not lost: one Python could not raise (it came
  in a weakref callback or ``__del__``) is delivered again as soon as the callback returns, and one a native
  library cleared is raised by :func:`check`, which a command calls at its milestones.
"""
from __future__ import annotations

import _thread
import contextlib
import dataclasses
import signal
import sys
import threading
import typing as tp

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
REDELIVERY_S = 0.001  # a swallowed signal is sent again this long after the callback that swallowed it
_received: tp.List[int] = []  # every signal number caught by a handler of this module, in order
_scopes = 0  # open settling() scopes
_settled = False  # settle() was called in the open scope: the raising handlers record instead
_late: tp.List[int] = []  # signals recorded since settle(), not yet reported (take_late)
_unhandled: tp.Optional[int] = None  # the last signal raised inside a settling() scope (swallowed if still unsettled)
_last_raised: tp.Optional[BaseException] = None  # the exception the raising handler raised last
_redeliver: tp.Optional[int] = None  # a signal whose exception Python swallowed, to be delivered again


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
    global _redeliver
    _redeliver = None  # this call raises (or records) the signal: nothing to deliver again
    _received.append(signum)
    if _settled:  # the command's outcome is final: a signal now cannot change it
        _late.append(signum)
        return
    global _unhandled, _last_raised
    _unhandled = signum
    _last_raised = exception_for(signum)
    raise _last_raised


def _quiet_when_swallowed(hook: tp.Callable[[tp.Any], tp.Any]) -> tp.Callable[[tp.Any], tp.Any]:
    """``sys.unraisablehook`` for an exception of this module's handler that Python could not raise (it came in a
    weakref callback or ``__del__``: importlib's module-lock callback during an import, a regex object's
    finaliser): instead of "Exception ignored in ..." and a lost signal, the signal is delivered again, so the
    handler raises it once the callback has returned."""
    def quiet(unraisable: tp.Any) -> None:
        if _last_raised is None or unraisable.exc_value is not _last_raised:
            hook(unraisable)
            return
        global _redeliver
        _redeliver = signal.SIGTERM if isinstance(_last_raised, Terminated) else signal.SIGINT
        # from another thread, a moment later: raised here (or anywhere in the callback) it would be swallowed again
        threading.Timer(REDELIVERY_S, _deliver_again).start()
    return quiet


def _deliver_again() -> None:
    """Run the main thread's handler for the swallowed signal, unless it was raised meanwhile (:func:`check`, a new
    signal) — and never with the default action: ``interrupt_main`` does nothing once this module's handlers are
    gone (``interrupt_main`` alone would still run Python's default SIGINT handler; ``os.kill`` would end the
    process)."""
    global _redeliver
    signum, _redeliver = _redeliver, None
    if signum is not None and signal.getsignal(signum) is _raise:
        _thread.interrupt_main(signum)


def check() -> None:
    """Raise the exception of a signal caught inside a :func:`settling` scope that never reached the command's
    handler (a native library swallowed it), unless the outcome is already settled; a no-op otherwise."""
    global _redeliver
    if _scopes and not _settled and _unhandled is not None:
        _redeliver = None
        raise exception_for(_unhandled)


@contextlib.contextmanager
def settling() -> tp.Iterator[None]:
    """A command's scope for :func:`settle`; scopes nest, and leaving the outermost one makes the handlers raise
    again (and forgets unreported late signals), so an in-process caller gets the normal behaviour back."""
    global _scopes, _settled, _unhandled
    if not _scopes:
        _unhandled = None
    _scopes += 1
    try:
        yield
    finally:
        _scopes -= 1
        if not _scopes:
            _settled = False
            _unhandled = None
            _late.clear()


def settle() -> None:
    """The command's outcome is final (its outputs are in place, or its error is being reported): until the
    outermost :func:`settling` scope ends, a SIGINT/SIGTERM caught by the raising handlers is recorded for
    :func:`take_late` instead of raised.  Outside any scope (library use) it does nothing."""
    global _settled
    if _scopes:
        _settled = True


def take_late() -> tp.Optional[str]:
    """The name of the first signal recorded since :func:`settle` and not yet reported ("SIGTERM"), or None;
    the record is cleared, so each is reported once."""
    if not _late:
        return None
    signum = _late[0]
    _late.clear()
    return NAMES.get(signum, f"signal {signum}")


@contextlib.contextmanager
def _handlers(signums: tp.Sequence[int], handler: tp.Callable[[int, tp.Any], None]) -> tp.Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    hook = sys.unraisablehook
    if handler is _raise:
        sys.unraisablehook = _quiet_when_swallowed(hook)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sys.unraisablehook = hook


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
