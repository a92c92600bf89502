"""The infer stage's commands: ``evaluate``, ``predict`` and ``predict-merge``."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.infer.evaluate import evaluate
from pipeline.infer.predict import predict
from pipeline.infer.prediction_file import PredictionFileError, find_parts, merge_parts, parse_shard


def evaluate_command(args: argparse.Namespace) -> int:
    """``radpipe evaluate`` handler."""
    summary = evaluate(args.run, args.manifest, args.out, split=args.split, tta=args.tta,
                       batch_size=args.batch_size, workers=args.workers, device=args.device)
    print(f"{summary.n_cases} case(s) of split '{summary.split}' -> {summary.out}")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``radpipe predict`` handler."""
    summary = predict(
        args.run, args.input, args.out, batch_size=args.batch_size, workers=args.workers,
        shard=parse_shard(args.shard) if args.shard else None, cam_dir=args.cam, device=args.device,
        modality=args.modality, rule=args.series,
    )
    resumed = f", {summary.n_resumed} from an earlier run" if summary.n_resumed else ""
    print(f"{summary.n_rows} series ({summary.n_ok} ok, {summary.n_error} error{resumed}) -> {summary.out}; "
          f"{summary.n_skipped} input(s) not predicted -> {summary.skipped_file}")
    return 0


def predict_merge_command(args: argparse.Namespace) -> int:
    """``radpipe predict-merge`` handler: parts given, or found next to ``--out``."""
    parts = [Path(p) for p in args.parts] or find_parts(args.out)
    if not parts:
        raise PredictionFileError(f"no part files given and none found next to {args.out} (<stem>.part-i-of-n.csv)")
    n = merge_parts(parts, args.out)
    print(f"{n} series from {len(parts)} part(s) -> {args.out}")
    return 0
