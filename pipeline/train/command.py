"""The train stage's commands: ``train`` and ``preview``."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.train.launch import train
from pipeline.train.preview import write_preview

log = logging.getLogger("radpipe")


def train_command(args: argparse.Namespace) -> int:
    """``radpipe train``: parse the config and options, train, print where the run is."""
    overrides = list(args.set or [])
    if args.deterministic:
        overrides.append("train.deterministic=true")
    config = args.config
    if config is None and args.resume and args.out:
        config = Path(args.out) / "config.yaml"
    if config is None:
        raise ConfigError("no config: give --config CFG.yaml (examples in data_manifests/)")
    cfg = load_config(config, overrides)
    result = train(cfg, args.out, manifest=args.manifest, resume=args.resume)
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f} (epoch {result.best_epoch})"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run: {result.run_dir}  best {result.key_metric}: {best}  last epoch: {result.last_epoch}")
    return 0


def preview_command(args: argparse.Namespace) -> int:
    """Handler of ``radpipe preview``."""
    cfg = load_config(args.config, args.set or [])
    manifest = args.manifest or cfg.data.manifest
    if not manifest:
        raise ConfigError("radpipe preview needs a manifest: pass --manifest M.csv or set data.manifest in the config")
    path = write_preview(cfg, manifest, args.out, n=args.n, split=args.split, seed=args.seed)
    log.info("preview of what the model sees written to %s", path)
    print(path)
    return 0
