"""SIGTERM handled like Ctrl-C: what ``timeout``, docker and Kubernetes send must clean up as SIGINT does."""
from __future__ import annotations

import contextlib
import signal
import threading
import typing as tp


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (a KeyboardInterrupt, so every
    ``except BaseException`` / ``finally`` clean-up runs and CLIs report "interrupted")."""


@contextlib.contextmanager
def sigterm_interrupts() -> tp.Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: tp.Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
