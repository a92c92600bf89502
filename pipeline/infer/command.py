"""The infer stage's commands: ``evaluate``, ``predict`` and ``predict-merge``."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.infer.evaluate import evaluate
from pipeline.infer.predict import predict
from pipeline.infer.prediction_file import (
    PredictionFileError,
    find_parts,
    merge_parts,
    parse_shard,
)
from pipeline.operating_point import parse_threshold_option


def evaluate_command(args: argparse.Namespace) -> int:
    """``radpipe evaluate`` handler."""
    summary = evaluate(args.run, args.manifest, args.out, split=args.split, tta=args.tta,
                       batch_size=args.batch_size, workers=args.workers, device=args.device,
                       threshold=parse_threshold_option(args.threshold), tta_views=args.tta_views)
    print(f"{summary.n_cases} case(s) of split '{summary.split}' -> {summary.out}")
    if summary.operating_point is not None:
        print(f"operating point {summary.operating_point.describe()} -> {args.run}/operating_point.json; "
              "predict and evaluate apply it")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``radpipe predict`` handler (then ``--dicom-out`` / ``--push``: 1 when an SR or map could not be written or sent)."""
    client = _push_client(args)  # a bad SOURCE or credentials file stops the command before any prediction
    summary = predict(
        args.run, args.input, args.out, batch_size=args.batch_size, workers=args.workers,
        shard=parse_shard(args.shard) if args.shard else None, cam_dir=args.cam, device=args.device,
        modality=args.modality, rule=args.series, threshold=parse_threshold_option(args.threshold),
        tta=args.tta, tta_views=args.tta_views,
    )
    resumed = f", {summary.n_resumed} from an earlier run" if summary.n_resumed else ""
    print(f"{summary.n_rows} series ({summary.n_ok} ok, {summary.n_error} error{resumed}) -> {summary.out}; "
          f"{summary.n_skipped} input(s) not predicted -> {summary.skipped_file}")
    if not getattr(args, "dicom_out", None):
        return 0
    from pipeline.infer.dicom_sr import model_identity, push_srs, write_srs

    classes, model = model_identity(args.run)
    srs = write_srs(summary.out, args.dicom_out, classes, model)
    print(f"{srs.n_written} DICOM SR(s) written, {srs.n_present} already there -> {args.dicom_out}")
    if args.cam:
        from pipeline.infer.dicom_cam import write_cam_maps

        maps = write_cam_maps(summary.out, args.cam, args.dicom_out, model)
        print(f"{maps.n_written} Grad-CAM parametric map(s) written, {maps.n_present} already there -> {args.dicom_out}")
        srs.failures += maps.failures
    if client is not None:
        srs = push_srs(args.dicom_out, client, srs)
        print(f"{srs.n_pushed} DICOM object(s) sent (recorded in {Path(args.dicom_out) / 'pushed.csv'})")
    for name, reason in srs.failures:
        print(f"  {name}: {reason}")
    return 1 if srs.failures else 0


def _push_client(args: argparse.Namespace) -> object | None:
    """The PACS client of ``--push`` (None without it)."""
    if not getattr(args, "push", None):
        return None
    from pipeline.errors import ConfigError
    from pipeline.ingest.pacs_connect import open_client
    from pipeline.ingest.pacs_source import load_credentials, parse_source

    if not args.dicom_out:
        raise ConfigError("--push sends the SRs of --dicom-out DIR: give --dicom-out too")
    return open_client(parse_source(args.push), load_credentials(args.credentials), aet=args.aet)


def predict_merge_command(args: argparse.Namespace) -> int:
    """``radpipe predict-merge`` handler: parts given, or found next to ``--out``."""
    parts = [Path(p) for p in args.parts] or find_parts(args.out)
    if not parts:
        raise PredictionFileError(f"no part files given and none found next to {args.out} (<stem>.part-i-of-n.csv)")
    n = merge_parts(parts, args.out)
    print(f"{n} series from {len(parts)} part(s) -> {args.out}")
    return 0
