"""``radpipe train``: validate everything, then train on MONAI's SupervisedTrainer / SupervisedEvaluator.

Order of work: the config, the manifest (every problem, reported together) and the label map
are checked and the model is built (pretrained weights read) before the run directory is
created; then datasets are cached, the engines built, and the run proceeds epoch by epoch.
Model selection uses the ``val`` split only; ``test`` rows are never read.

Example (Python instead of ``radpipe train``)::

    result = train(load_config("cfg.yaml"), "runs/exp1", manifest="data/manifest.csv")
    print(result.best_metric, result.best_epoch)
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.registry import get_entry
from pipeline.config import Config, config_to_dict, load_config, with_changes
from pipeline.errors import ConfigError, ManifestError, PipelineError, RunError, format_problems
from pipeline.files import TEMP_PREFIX
from pipeline.locks import output_lock
from pipeline.manifest.image_files import image_file_problems
from pipeline.manifest.labels import LabelMap
from pipeline.manifest.reading import image_columns, load_manifest
from pipeline.manifest.schema import Problem, normalised_split
from pipeline.manifest.validation import validate_manifest
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.run_dir import (CHECKPOINT_DIR, CONFIG_FILE, ENV_FILE, LABELS_FILE, METRICS_FILE,
                                    WEIGHTS_REPORT_FILE, default_run_dir)
from pipeline.train.session import TrainResult, run_training
from transforms.chains import check_config
from transforms.channels import resolve_channels
from transforms.limits import max_voxels

log = logging.getLogger("radpipe")

#: What ``train`` writes into a new run directory before its first epoch ends (see :func:`unstarted_run`).
START_ENTRIES = frozenset({CONFIG_FILE, LABELS_FILE, WEIGHTS_REPORT_FILE, ENV_FILE, METRICS_FILE, CHECKPOINT_DIR,
                           "cache", "tensorboard"})
_ONLY_TRAIN_WRITES = frozenset({LABELS_FILE, WEIGHTS_REPORT_FILE, ENV_FILE})


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [
        f"{section}.{key}: {a[section][key]!r} vs {b.get(section, {}).get(key)!r}"
        for section in a
        for key in a[section]
        if a[section][key] != b.get(section, {}).get(key)
    ]


def resolve_config(cfg: Config, manifest: str | os.PathLike | None) -> Config:
    """``cfg`` with ``data.manifest`` set from ``manifest`` (or the config) as an absolute path.

    Raises:
        ConfigError: no manifest given anywhere.
    """
    path = str(manifest) if manifest is not None else cfg.data.manifest
    if not path:
        raise ConfigError("no manifest: give --manifest M.csv or set data.manifest in the config")
    return with_changes(cfg, data={"manifest": str(Path(path).expanduser().absolute())})


def resolve_channel_rule(cfg: Config) -> Config:
    """``cfg`` with ``transforms.channels: auto`` resolved from its train and val images.

    ``rgb`` when any of them is a colour picture (or MedMNIST-style RGB NIfTI), else ``grey``
    (:func:`transforms.channels.resolve_channels`, headers only); the run saves the resolved value, so
    ``evaluate`` and ``predict`` convert as training did. A manifest that cannot be read leaves ``auto``:
    :func:`validate_inputs` reports why.
    """
    t = cfg.transforms
    if t.channels != "auto":
        return cfg
    try:
        df = load_manifest(cfg.data.manifest, cfg.data)
    except (PipelineError, OSError):
        return cfg
    if "split" in df.columns:
        df = df[[normalised_split(str(v or "")) in ("train", "val") for v in df["split"]]]
    paths = [v for c in image_columns(df, cfg.data) if c in df.columns for v in df[c] if v]
    rule = resolve_channels(t.channels, paths, t.spatial_dims)
    log.info("transforms.channels: auto -> %s (from %d train/val images)", rule, len(paths))
    return with_changes(cfg, transforms={"channels": rule})


def unstarted_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a ``train`` that stopped before its first epoch ended left there.

    That is: nothing but :data:`START_ENTRIES` (and temporaries of radpipe's atomic writes), at least one
    of the files only ``train`` writes (``labels.json``, ``weights_report.json``, ``env.json``), no
    checkpoint in ``checkpoints/`` and no row in ``metrics.csv``. Such a folder holds no result and may be
    reused by a new run (a failed ``train`` never blocks the same command run again).
    """
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    names = {e.name for e in entries if not e.name.startswith(TEMP_PREFIX)}
    if not names <= START_ENTRIES or not names & _ONLY_TRAIN_WRITES:
        return False
    for entry in entries:
        if entry.name in (CHECKPOINT_DIR, "cache", "tensorboard") and (entry.is_symlink() or not entry.is_dir()):
            return False
        if entry.name not in (CHECKPOINT_DIR, "cache", "tensorboard") and not entry.is_file():
            return False
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.is_dir() and any(not c.name.startswith(TEMP_PREFIX) for c in checkpoints.iterdir()):
        return False
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        with metrics.open(encoding="utf-8", errors="replace") as f:
            if sum(1 for line in f if line.strip()) > 1:
                return False
    return True


def check_run_dir(run_dir: Path, cfg: Config, resume: bool) -> dict[str, Any] | None:
    """Check ``run_dir`` for a new run (absent, empty or :func:`unstarted_run`) or a resume (same config).

    A folder left by a run that failed before its first epoch ended is reused by a new run (its
    ``tensorboard/`` logs are removed; the data cache, keyed by the config, is kept). Resuming a run
    killed before its first epoch ended (no ``last.pt``) starts it over; None is returned.

    Returns:
        The ``last.pt`` checkpoint to resume from, or None.

    Raises:
        RunError: a new run would overwrite a run, or a resumed folder holds no run.
        ConfigError: the config differs from the resumed run's ``config.yaml``.
    """
    last = run_dir / "checkpoints" / "last.pt"
    if not resume:
        if int(os.environ.get("RANK", "0")) == 0 and run_dir.exists() and any(run_dir.iterdir()):
            if not unstarted_run(run_dir):
                raise RunError(f"run directory {run_dir} exists and is not empty; add --resume to continue it or "
                               "choose another --out")
            log.warning("reusing %s: it holds only the start files of a run that stopped before its first epoch",
                        run_dir)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        return None
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"cannot resume: {run_dir / 'config.yaml'} not found; start a new run without --resume")
    saved = load_config(run_dir / "config.yaml")
    diff = _differences(config_to_dict(cfg), config_to_dict(saved))
    if diff:
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from its config.yaml ({'; '.join(diff[:5])}); "
            "resume with the run's own config (omit --config / --set) or start a new run"
        )
    if not last.is_file():
        log.warning("%s has no finished epoch yet: resuming starts it from the beginning", run_dir)
        return None
    return load_checkpoint(last)


def check_environment(cfg: Config) -> None:
    """Config checks that need the installation: transforms, model name, device, tracking.

    Raises:
        ConfigError: a setting cannot work here (the message names the key and the fix).
        UnknownModelError: ``model.name`` is not registered.
    """
    max_voxels()  # a bad RADPIPE_MAX_VOXELS is a config error, before any work
    check_config(cfg.transforms, cfg.data.image_columns)
    get_entry(cfg.model.name)
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config key 'train.device' is 'cuda' but no CUDA device is available; set device: auto or cpu"
        )
    if cfg.train.mlflow_uri and importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"config key 'train.mlflow_uri' is {cfg.train.mlflow_uri!r} but mlflow is not installed; "
            "pip install 'radpipe[tracking]' or leave train.mlflow_uri empty"
        )


def validate_inputs(cfg: Config) -> tuple[Any, Any]:
    """Check the config against the installation and the manifest, and build the label map.

    The manifest is validated as a whole (columns, labels, splits, leakage) but only the image
    files of ``train`` and ``val`` rows are opened: training never reads the test split. Each is
    recognised by name and content and decoded to its first slice
    (:func:`~pipeline.manifest.image_files.image_file_problem`), all before anything is written.

    Returns:
        The manifest (``split`` normalised to train / val / test) and its :class:`~pipeline.manifest.labels.LabelMap`.

    Raises:
        ConfigError, UnknownModelError: see :func:`check_environment`.
        ManifestError: every error of the manifest in one message (warnings are logged).
    """
    check_environment(cfg)
    path = cfg.data.manifest
    df = load_manifest(path, cfg.data)
    problems = list(validate_manifest(df, cfg, check_files=False))
    if "split" not in df.columns:
        problems.append(
            Problem("error", None, "split", "no split column; training needs train and val rows",
                    "add a split column (radpipe split MANIFEST.csv --out OUT.csv)")
        )
    else:
        df = df.assign(split=[normalised_split(str(v or "")) for v in df["split"]])
        for side in ("train", "val"):
            if not (df["split"] == side).any():
                problems.append(
                    Problem("error", None, "split", f"no '{side}' rows; training needs train and val rows",
                            "assign cases to train and val (radpipe split)")
                )
        used = df[df["split"].isin(("train", "val"))]
        cells = [(int(r), c, v) for c in image_columns(df, cfg.data) if c in used.columns
                 for r, v in zip(used["row"], used[c]) if v]
        found = image_file_problems([cell[2] for cell in cells])
        problems += [
            Problem("error", row, column, problem, "fix the path or the file, or drop the row")
            for (row, column, _), problem in zip(cells, found) if problem
        ]
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        raise ManifestError(f"manifest {path}: {format_problems(errors)}")
    for p in problems:
        log.warning("manifest %s: %s", path, p)
    return df, LabelMap.from_manifest(df, cfg.data)


def train(
    cfg: Config,
    out_dir: str | os.PathLike | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    resume: bool = False,
    extra_handlers: Sequence[Any] = (),
) -> TrainResult:
    """Train a model and write a run directory (see :mod:`pipeline.train.run_dir`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; each trains on its shard,
    validation predictions are gathered from all ranks, and only rank 0 writes files.

    Args:
        cfg: the run configuration.
        out_dir: the run directory; None: ``runs/<timestamp>`` (required with ``resume``).
        manifest: the CSV manifest; None: ``cfg.data.manifest``.
        resume: continue the run in ``out_dir`` from ``checkpoints/last.pt`` (same config).
        extra_handlers: further ignite handlers (with ``attach(engine)``) attached to the trainer last.

    Returns:
        The best and last epochs and the per-epoch history.

    Raises:
        ConfigError: bad config (before any work; nothing is written).
        ManifestError: the manifest has problems (all listed; no run directory is made).
        RunError: the run directory conflicts with ``resume``.
        OutputLockedError: another ``train`` writes the same run directory (``RUN_DIR.lock`` beside it).
        WeightsError: the pretrained weights cannot be read or mapped.
    """
    cfg = resolve_config(cfg, manifest)
    if resume and out_dir is None:
        raise RunError("--resume needs --out RUN_DIR: the run directory to continue")
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir()
    saved = run_dir / CONFIG_FILE
    if not (resume and saved.is_file() and load_config(saved).transforms.channels == "auto"):  # runs before the rule
        cfg = resolve_channel_rule(cfg)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with output_lock(run_dir, "train") if main_rank else contextlib.nullcontext():  # one train per folder
        checkpoint = check_run_dir(run_dir, cfg, resume)
        df, label_map = validate_inputs(cfg)
        return run_training(cfg, run_dir, df, label_map, checkpoint, extra_handlers)
