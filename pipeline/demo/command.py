"""The ``radpipe demo`` handler; the subcommand's arguments are declared in :mod:`pipeline.cli`."""
from __future__ import annotations

import argparse

from pipeline.demo.run import run_demo
from pipeline.errors import ConfigError


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo with the parsed arguments of ``radpipe demo``.

    Args:
        args: ``out``, ``patients``, ``seed``, ``export_only`` and ``pacs`` of the ``demo`` subcommand.

    Returns:
        The exit status, 0; a failed stage raises :class:`~pipeline.demo.run.DemoStageError`.
    """
    pacs = getattr(args, "pacs", False)
    if pacs and args.export_only:
        raise ConfigError("--pacs predicts with the demo's trained model, which --export-only does not train; "
                          "give one of the two")
    run_demo(args.out, n_patients=args.patients, seed=args.seed, export_only=args.export_only, pacs=pacs)
    return 0
