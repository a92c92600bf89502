"""The ``radpipe demo`` handler; the subcommand's arguments are declared in :mod:`pipeline.cli`."""
from __future__ import annotations

import argparse

from pipeline.demo.run import run_demo


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo with the parsed arguments of ``radpipe demo``.

    Args:
        args: ``out``, ``patients``, ``seed`` and ``export_only`` of the ``demo`` subcommand.

    Returns:
        The exit status, 0; a failed stage raises :class:`~pipeline.demo.run.DemoStageError`.
    """
    run_demo(args.out, n_patients=args.patients, seed=args.seed, export_only=args.export_only)
    return 0
