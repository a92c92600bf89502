"""The ingest stage's commands: ``scan``, ``convert`` and ``pull``."""
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
                             keep_identifiers=args.keep_identifiers, follow_links=args.follow_links,
                             philips_scaling=args.philips_scaling)
    for line in summary.lines():
        print(line)
    return 1 if summary.n_failed and not summary.n_written else 0


def pull_command(args: argparse.Namespace) -> int:
    """Handler of ``radpipe pull``: 0 when every target came through, 1 when some failed (listed), 2 on bad input."""
    from pipeline.errors import ConfigError
    from pipeline.ingest.pacs_connect import open_client
    from pipeline.ingest.pacs_source import load_credentials, parse_source
    from pipeline.ingest.pull import pull, read_targets, study_targets
    from pipeline.pseudonym import Pseudonymiser

    if bool(args.accessions) == bool(args.study):
        raise ConfigError("give the studies to pull with --accessions SHEET.csv or with --study UID (one of the two)")
    source = parse_source(args.source)
    move = getattr(args, "move", False)
    if move and source.kind != "dimse":
        raise ConfigError("--move is a DIMSE retrieve: give SOURCE as dimse://AET@host:port (DICOMweb needs no --move)")
    pseudonymiser = Pseudonymiser()
    targets = read_targets(args.accessions, args.key) if args.accessions else study_targets(args.study, pseudonymiser)
    modalities = tuple(m.strip().upper() for m in (args.modality or "").split(",") if m.strip())
    client = open_client(source, load_credentials(args.credentials), aet=args.aet, timeout_s=args.timeout,
                         move=(args.move_host, args.move_port) if move else None)
    try:
        summary = pull(client, targets, args.out, modalities=modalities, workers=args.workers,
                       pseudonymiser=pseudonymiser)
    finally:
        client.close()  # a C-MOVE client's storage SCP stops here, whatever happened
    for line in summary.lines():
        print(line)
    return 1 if summary.failures else 0
