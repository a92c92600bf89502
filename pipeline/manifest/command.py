"""The manifest stage's commands: ``manifest``, ``validate-manifest``, ``split`` and ``import-medmnist``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config, load_config
from pipeline.errors import ManifestError
from pipeline.files import atomic_open
from pipeline.manifest.join import join_manifest
from pipeline.manifest.medmnist import import_medmnist
from pipeline.manifest.reading import image_columns, load_manifest, patient_column, read_manifest_csv
from pipeline.manifest.split import assign_folds, assign_splits, rebase_image_paths, split_table
from pipeline.manifest.validation import label_map_for, manifest_summary, print_problems, validate_manifest

if TYPE_CHECKING:
    import pandas as pd


def manifest_command(args: argparse.Namespace) -> int:
    """``radpipe manifest``: join a scan index and a label sheet; print what did not match."""
    label_columns = tuple(c.strip() for c in args.label_column.split(",") if c.strip())
    manifest, report = join_manifest(
        args.index, args.labels, args.key, args.out, where=args.where, select=args.select, label_columns=label_columns
    )
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} ({len(manifest)} case(s)); next: radpipe validate-manifest {args.out}")
    if manifest.empty:
        raise ManifestError(
            f"no series of {args.index} matched a row of {args.labels} on '{args.key}'; check --key, --where "
            "and that radpipe scan used the same pseudonymisation secret ($RADPIPE_SECRET_FILE)"
        )
    return 0


def validate_manifest_command(args: argparse.Namespace) -> int:
    """``radpipe validate-manifest``: print problems and a summary; exit 2 when any is an error."""
    cfg = load_config(args.config) if args.config else None
    df = load_manifest(args.manifest, cfg.data if cfg is not None else None, sep=args.sep)
    problems = validate_manifest(df, cfg, check_files=not args.no_file_check, deep=args.deep, strict=args.strict)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    label_map = label_map_for(df, cfg)
    if label_map is not None:
        how = "from --config" if cfg is not None else "inferred; pass --config to check against your config"
        print(f"task {label_map.task} ({how}); classes {list(label_map.classes)}")
    print(manifest_summary(df, label_map))
    if problems:
        print(f"{errors} error(s), {warnings} warning(s) in {args.manifest}:")
        print_problems(problems)
    else:
        print(f"{args.manifest}: no problems found")
    if not args.no_file_check:
        depth = "every voxel decoded" if args.deep else "header and first slice decoded; --deep decodes every voxel"
        print(f"{_image_count(df, cfg)} image(s) opened: {depth}")
    return 2 if errors else 0


def _image_count(df: pd.DataFrame, cfg: Config | None) -> int:
    columns = [c for c in image_columns(df, cfg.data if cfg is not None else None) if c in df.columns]
    return len({v for c in columns for v in df[c] if v})


def split_command(args: argparse.Namespace) -> int:
    """``radpipe split``: add a ``split`` (or ``fold``) column and write the manifest."""
    source, out = Path(args.manifest), Path(args.out)
    df = read_manifest_csv(source, sep=args.sep)
    group = args.group or patient_column(df) or "patient_id"
    stratify = [c.strip() for c in (args.stratify or "").split(",") if c.strip()]
    if args.folds:
        if args.val is not None:
            raise ManifestError("--val cannot be combined with --folds: each fold is the val set of one round")
        df["fold"] = ""
        rest = df.index
        if args.test:
            df["split"] = assign_splits(df, group, stratify, val=0.0, test=args.test, seed=args.seed)
            rest = df.index[df["split"] == "train"]
        folds = assign_folds(df.loc[rest].reset_index(drop=True), group, stratify, args.folds, args.seed)
        df.loc[rest, "fold"] = [str(k) for k in folds]
        print(split_table(df.loc[rest, "fold"].astype(int).tolist(), df.loc[rest].reset_index(drop=True), stratify))
    else:
        val = 0.1 if args.val is None else args.val
        test = 0.2 if args.test is None else args.test
        df["split"] = assign_splits(df, group, stratify, val=val, test=test, seed=args.seed)
        print(split_table(df["split"].tolist(), df, stratify))
    with atomic_open(out, newline="") as f:
        rebase_image_paths(df, source, out).to_csv(f, index=False)
    print(f"wrote {out} ({len(df)} cases, grouped by '{group}', seed {args.seed})")
    return 0


def import_medmnist_command(args: argparse.Namespace) -> int:
    """``radpipe import-medmnist``: write images, manifest, labels and a starting config."""
    start = time.monotonic()
    result = import_medmnist(args.npz, args.out, fmt=args.format, limit=args.limit, workers=args.workers)
    total = sum(result.counts.values())
    print(
        f"{result.name}: {total} {result.spatial_dims}D image(s), {result.channels} channel(s), size "
        f"{'x'.join(map(str, result.size))}, task {result.task}, classes {list(result.classes)}"
    )
    print("cases per split: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    print(f"wrote {result.manifest} and {total} image(s) in {time.monotonic() - start:.1f} s")
    print(f"next: radpipe train --config {Path(args.out) / 'config.yaml'} --manifest {result.manifest}")
    return 0
