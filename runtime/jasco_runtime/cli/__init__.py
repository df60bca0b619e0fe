"""``jasco-run``: generate music from exported JASCO graphs, verify an export folder, build its TensorRT engines.

    jasco-run --engines engines/jasco-chords-drums-400M --text "funky groove" --out out.wav   # generate (default)
    jasco-run verify ENGINES_DIR
    jasco-run build-engines ENGINES_DIR

One parser with a subcommand per job (:mod:`.app`), one wrapper that owns exit codes, signals and ``--json``
errors (:mod:`.command`).  This module imports nothing heavy, so :func:`main` installs the signal handlers
before numpy and the backends are imported: Ctrl-C in the first 0.1 s is a one-line exit 130 too (SX-*).
"""
from __future__ import annotations

import _signal  # the builtin itself: `import signal` builds its enums first (milliseconds without a handler)
import os
import sys


def _exit_during_start_up(signum: int, frame: object) -> None:
    """Ctrl-C/SIGTERM while jasco-run is still importing: nothing exists yet to clean up or report."""
    term = signum == _signal.SIGTERM
    os.write(2, f"jasco-run: {'terminated by SIGTERM' if term else 'interrupted'} during start-up; nothing was "
                "written\n".encode())
    os._exit(128 + signum)


# The command itself (the console script, or `python -m jasco_runtime.cli`, where argv[0] is "-m" while the
# package is imported): handle the signals before anything else is imported.  A library import is left alone.
_AS_COMMAND = bool(sys.argv) and (sys.argv[0] == "-m" or os.path.basename(sys.argv[0]) == "jasco-run")
if _AS_COMMAND:
    for _s in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(_s, _exit_during_start_up)

import signal  # noqa: E402
import typing as tp  # noqa: E402

from .. import signals as _signals  # noqa: E402
from ..exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["main", "parser", "COMMANDS"]


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """``jasco-run`` (see :func:`jasco_runtime.cli.app.main` for the exit codes)."""
    # from here on Ctrl-C/SIGTERM raise and the subcommand wrapper reports them; once it has settled the outcome,
    # they are recorded until the process ends (no window in which a finished run could end in a traceback)
    with _signals.interrupts(), _signals.settling():
        try:
            from .app import main as run_main

            _signals.check()  # a signal whose exception an import swallowed
        except KeyboardInterrupt as exc:  # the signal came while Python was still importing (numpy, ...)
            _signals.settle()
            term = isinstance(exc, _signals.Terminated)
            print(f"jasco-run: {'terminated by SIGTERM' if term else 'interrupted'} during start-up; nothing was "
                  "written", file=sys.stderr, flush=True)
            code = EXIT_TERMINATED if term else EXIT_INTERRUPTED
        else:
            code = run_main(argv)
        if _AS_COMMAND:  # inside the block: no moment without a handler of ours (the start-up one would lie)
            _settle(code)
    return code


def _settle(code: int) -> tp.NoReturn:
    """The command has finished (its outputs are in place or its error was reported): a SIGINT/SIGTERM while Python
    shuts down (unloading ONNX Runtime takes a while, and Python resets its signal handlers then) cannot change that
    (S09/S10).  So the process ends here, with the command's exit code, once stdout, stderr and the logs are
    flushed; a signal in between says so and keeps the code."""
    import logging

    def note(name: str) -> None:
        os.write(2, f"jasco-run: {name} arrived after the command had finished; its result stands\n".encode())

    def late(signum: int, frame: object) -> None:  # at once: a flush may be blocked on a full pipe
        note("SIGTERM" if signum == signal.SIGTERM else "SIGINT")
        os._exit(code)

    _signals.settle()  # until `late` is installed, a signal is recorded, not raised
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, late)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    name = _signals.take_late()  # recorded after the wrapper's own report
    if name:
        note(name)
    os._exit(code)


def __getattr__(name: str) -> tp.Any:  # lazy: importing jasco_runtime.cli pulls in no backend, numpy or handler
    if name in ("parser", "COMMANDS"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
