"""The ingest stage's commands: ``scan`` and ``convert``."""
from __future__ import annotations

import argparse


def scan_command(args: argparse.Namespace) -> int:
    """Handler of ``radpipe scan``."""
    from pipeline.ingest.scan import scan_export  # not convert's imports too: start-up is part of a scan's time

    summary = scan_export(args.export_dir, args.out, workers=args.workers, keep_identifiers=args.keep_identifiers,
                          follow_links=args.follow_links)
    for line in summary.lines():
        print(line)
    return 0


def convert_command(args: argparse.Namespace) -> int:
    """Handler of ``radpipe convert``."""
    from pipeline.ingest.convert import convert_export

    summary = convert_export(args.export_dir, args.out_dir, workers=args.workers,
                             keep_identifiers=args.keep_identifiers, follow_links=args.follow_links)
    for line in summary.lines():
        print(line)
    return 1 if summary.n_failed and not summary.n_written else 0
