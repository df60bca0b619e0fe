"""One wrapper for every jasco-run subcommand: exit codes, SIGINT/SIGTERM, one-line and ``--json`` errors.

README "Error contract": bad input → one line naming the problem and the fix on stderr, exit 2, nothing
written; a failed check (verify) → exit 1 with one line; Ctrl-C → 130, SIGTERM → 143, each with one line
saying what was (not) written; a bug → exit 1 with its traceback.  With ``--json`` every failure also prints
``{"error": ..., "exit_code": ...}`` on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing as tp

from .. import signals
from ..errors import JascoError
from ..exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED


class UsageError(Exception):
    """A command-line syntax error (argparse's own check)."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a syntax error through the wrapper (one line, and a JSON object with ``--json``)
    instead of printing the whole usage and exiting from inside ``parse_args``; subcommand parsers too."""

    def error(self, message: str) -> tp.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its arguments, what it runs (→ exit code), and what an interrupt leaves behind."""

    name: str
    help: str
    add_arguments: tp.Callable[[argparse.ArgumentParser], None]
    run: tp.Callable[[argparse.Namespace], int]
    interrupted: str = "nothing was written"  # the truth after Ctrl-C/SIGTERM before the command's outputs exist
    progress: bool = False  # log progress (INFO) without -v: commands whose progress is their output (builds)


def fail(prog: str, message: str, code: int, as_json: bool, prefix: str = "error: ") -> int:
    """One line on stderr; with ``--json`` also ``{"error": ..., "exit_code": ...}`` on stdout."""
    print(f"{prog}: {prefix}{message}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}), flush=True)
    return code


def run_command(prog: str, command: Command, args: argparse.Namespace) -> int:
    """Run ``command`` with SIGINT/SIGTERM raising (clean-up runs in ``finally``/``except BaseException``)
    and map the outcome to the documented exit code and one line.  Once the outcome is known (the command
    returned, or its failure is being reported) a signal is recorded, not raised (``signals.settle``): it is
    reported after the fact and cannot turn a finished run into "nothing was written" or a traceback."""
    with signals.settling():
        code = _outcome(prog, command, args, bool(getattr(args, "json", False)))
        late = signals.take_late()
        if late:  # S09/S10: the signal came after the command finished (its outputs are in place): say so, keep it
            print(f"{prog}: {late} arrived after the command had finished; its result stands", file=sys.stderr,
                  flush=True)
        return code


def _outcome(prog: str, command: Command, args: argparse.Namespace, as_json: bool) -> int:
    before = signals.received()
    try:
        try:
            with signals.interrupts():
                from ..verify import VerificationFailed  # noqa: F401  (inside: a signal during the import is one line)

                code = command.run(args)
                signals.settle()
            return code
        except Exception as exc:  # a native library turned a signal into its own error (ONNX Runtime's import or
            if signals.received() == before:  # session init: "initialization failed"): the signal is what happened
                raise
            raise signals.exception_for(signals.last_signal()) from exc
    except JascoError as exc:
        signals.settle()
        from ..verify import VerificationFailed

        if isinstance(exc, VerificationFailed):
            return fail(prog, str(exc), EXIT_FAILED, as_json, prefix="")
        return fail(prog, str(exc), EXIT_BAD_INPUT, as_json)
    except KeyboardInterrupt as exc:
        signals.settle()
        if isinstance(exc, signals.Terminated):
            return fail(prog, f"terminated by SIGTERM; {command.interrupted}", EXIT_TERMINATED, as_json, prefix="")
        return fail(prog, f"interrupted; {command.interrupted}", EXIT_INTERRUPTED, as_json, prefix="")
    except BrokenPipeError:  # `jasco-run ... --json | head`: the reader left; no traceback, no second write
        signals.settle()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"{prog}: stdout was closed before the report was printed (broken pipe)", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        signals.settle()
        if as_json:  # a bug: the traceback goes to stderr, the JSON reader still gets an object
            print(json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}", "exit_code": EXIT_FAILED}))
        raise


def late_signal_note(prog: str, name: tp.Optional[str], what: str) -> None:
    """A signal held while finished outputs were put in place: the outputs are complete; say so (exit 0)."""
    if name:
        print(f"{prog}: {name} arrived while {what} were being put in place; they were completed", file=sys.stderr,
              flush=True)
