"""The ``jasco-run`` parser: one subcommand per job; ``generate`` is the default when the first argument is
an option, so ``jasco-run --engines D --text x --out o.wav`` keeps working."""
from __future__ import annotations

import argparse
import sys
import typing as tp

from .. import signals
from ..exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED
from ..extract import cli as extract_cli
from . import build_engines, generate, logs, verify
from .command import Command, Parser, UsageError, fail, run_command

PROG = "jasco-run"
DEFAULT = "generate"
# Add a subcommand with one line: its module's COMMAND (name, help, add_arguments, run).
COMMANDS: tp.Dict[str, Command] = {c.name: c for c in (generate.COMMAND, verify.COMMAND, build_engines.COMMAND,
                                                       extract_cli.CHORDS_COMMAND, extract_cli.MELODY_COMMAND)}


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Run exported JASCO graphs (numpy + ONNX Runtime / TensorRT, no torch).",
               epilog=f"`{PROG} --engines DIR --text ... --out o.wav` is `{PROG} {DEFAULT} ...`; "
                      f"`{PROG} COMMAND --help` lists a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(sp)
        sp.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    return p


def _with_default(argv: tp.List[str]) -> tp.List[str]:
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return [DEFAULT, *argv]
    return argv


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Exit codes: 0 done, 1 a failed check (verify) or a bug (traceback), 2 bad input (one line, nothing
    written), 130 Ctrl-C, 143 SIGTERM."""
    argv = _with_default(list(sys.argv[1:] if argv is None else argv))
    as_json = "--json" in argv
    prog = f"{PROG} {argv[0]}" if argv[0] in COMMANDS and argv[0] != DEFAULT else PROG
    try:
        with signals.interrupts():
            try:
                args = parser().parse_args(argv)
            except SystemExit as exc:  # --help
                return int(exc.code or 0)
    except UsageError as exc:  # argparse names the top parser for unrecognized arguments: point at the subcommand
        signals.settle()  # (each branch: the outcome is decided; a signal while it is reported is only recorded)
        return fail(prog, str(exc).replace(f"(see {PROG} --help)", f"(see {prog} --help)"), EXIT_BAD_INPUT, as_json)
    except signals.Terminated:
        signals.settle()
        return fail(prog, "terminated by SIGTERM; nothing was written", EXIT_TERMINATED, as_json, prefix="")
    except KeyboardInterrupt:
        signals.settle()
        return fail(prog, "interrupted; nothing was written", EXIT_INTERRUPTED, as_json, prefix="")
    logs.configure(prog, verbose=args.verbose or COMMANDS[args.command].progress)
    return run_command(prog, COMMANDS[args.command], args)
