"""The ``radpipe`` command: argparse subcommands dispatched lazily.

Each subcommand is one entry of :data:`COMMANDS`: its name, a one-line help, a
function adding its arguments, and its handler as ``"module:function"``. The
handler module is imported only when the command runs, so ``radpipe --help``
never imports torch. A handler takes the parsed arguments and returns the exit
status. A :class:`~pipeline.errors.PipelineError` prints one line to stderr and
exits with status 2; any other exception keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import __version__
from pipeline.errors import PipelineError

log = logging.getLogger("radpipe")


@dataclass(frozen=True)
class Command:
    """One subcommand of ``radpipe``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: str


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text}")
    return value


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="radpipe-demo", help="folder of everything the demo writes (default: %(default)s)")
    p.add_argument("--patients", type=_positive_int, default=60, help="patients in the synthetic export")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic export and of training")
    p.add_argument("--export-only", action="store_true", help="only write the synthetic hospital export and labels")


COMMANDS: list[Command] = [
    Command(
        "demo",
        "run the whole pipeline on a synthetic hospital export it writes itself",
        _demo_args,
        "pipeline.demo:run_demo_command",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``radpipe`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="radpipe",
        description="From a hospital's DICOM export to a validated, transfer-learned model.",
    )
    parser.add_argument("--version", action="version", version=f"radpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_handler=command.handler)
    return parser


def _resolve(handler: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function = handler.partition(":")
    return getattr(importlib.import_module(module_name), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``radpipe`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 2
    try:
        return int(_resolve(args._handler)(args) or 0)
    except PipelineError as e:
        message = " ".join(str(e).split())
        print(f"radpipe {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radpipe {args.command}: interrupted", file=sys.stderr)
        return 130
