"""The manifest stage's commands: ``manifest``, ``validate-manifest``, ``split``, ``import-medmnist`` and
``import-images``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config, load_config
from pipeline.errors import ManifestError
from pipeline.files import atomic_open
from pipeline.locks import output_lock
from pipeline.manifest.import_images import import_images
from pipeline.manifest.join import UnmatchedError, join_manifest
from pipeline.manifest.medmnist import import_medmnist
from pipeline.manifest.medmnist_recipe import describe_recipe
from pipeline.manifest.reading import image_columns, load_manifest, patient_column, read_manifest_csv
from pipeline.manifest.split import assign_folds, assign_splits, rebase_image_paths, split_table
from pipeline.manifest.validation import (
    class_order_line,
    label_map_for,
    manifest_summary,
    print_problems,
    validate_manifest,
)

if TYPE_CHECKING:
    import pandas as pd


def manifest_command(args: argparse.Namespace) -> int:
    """``radpipe manifest``: join a scan index and a label sheet; print what did not match."""
    label_columns = tuple(c.strip() for c in args.label_column.split(",") if c.strip())
    try:
        manifest, report = join_manifest(
            args.index, args.labels, args.key, args.out, where=args.where, select=args.select,
            label_columns=label_columns, max_unmatched=args.max_unmatched,
        )
    except UnmatchedError as e:
        for line in e.report.lines():
            print(line)
        raise
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} ({len(manifest)} case(s)); next: radpipe validate-manifest {args.out}")
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
        print(class_order_line(label_map, from_config=cfg is not None))
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
    described = describe_recipe(result.spatial_dims, result.counts.get("train", 0), result.size)
    print(f"recipe ({result.spatial_dims}D default, in config.yaml): {described}")
    print(f"wrote {result.manifest} and {total} image(s) in {time.monotonic() - start:.1f} s")
    print(f"next: radpipe train --config {Path(args.out) / 'config.yaml'} --manifest {result.manifest}")
    return 0


def import_images_command(args: argparse.Namespace) -> int:
    """``radpipe import-images``: a folder of pictures (ImageFolder tree, or folder + label sheet) -> manifest."""
    with output_lock(args.out, "import-images"):
        result = import_images(
            args.src, args.out, labels=args.labels, key=args.key, label_column=args.label_column,
            patient_column=args.patient_column, patient_pattern=args.patient_pattern, preset=args.preset,
            val=args.val, test=args.test, seed=args.seed,
        )
    for line in result.lines():
        print(line)
    config = Path(args.out) / "config.yaml"
    print(f"wrote {result.manifest}, labels.json, config.yaml and unmatched.csv in {args.out}")
    print(f"next: radpipe validate-manifest {result.manifest} --config {config}; radpipe train --config {config}")
    return 0
