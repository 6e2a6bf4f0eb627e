"""The ``camrt`` command; a subcommand is one module (``NAME``, ``register(subparsers, parents)``, ``run(args)``)
plus one line of :data:`COMMANDS`. Bad input ends in one line, ``camrt: error: ...``, and exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from camrt._version import __version__
from camrt.cli import bench, calibrate, evaluate, explain, explain_dataset, export, info, report, serve
from camrt.cli.args import Parser, UsageError
from camrt.errors import CamrtError, one_line

USAGE_ERROR = 2
INTERRUPTED = 130

COMMANDS: tuple[ModuleType, ...] = (export, explain, evaluate, explain_dataset, info, bench, report, serve, calibrate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (exposed for the docs and the tests)."""
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    parser = Parser(prog="camrt", description="Exact, fast Score-CAM-family explanations on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"camrt {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(subparsers, [debug])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"camrt: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    command = next(c for c in COMMANDS if c.NAME == args.command)
    try:
        return int(command.run(args))
    except (CamrtError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"camrt: error: {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as run_folder.Terminated (exit 143)
        if args.debug:
            raise
        print(f"camrt: {exc or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_status", INTERRUPTED))


__all__ = ["COMMANDS", "build_parser", "main"]
