"""The run directory: what ``radpipe train`` writes, and :func:`load_run` to read it back.

::

    RUN_DIR/
      config.yaml          resolved config (load_config reads it back)
      labels.json          LabelMap (task, classes, label columns)
      weights_report.json  what the pretrained source loaded / adapted / skipped ({"source": null} from scratch)
      metrics.csv          one row per epoch: epoch, lr, train_loss, val_<metric>..., time_s, images_per_s
      env.json             python / torch / monai / pydicom versions, device, seed, git revision, host
      checkpoints/best.pt  best epoch by train.key_metric on the validation split
      checkpoints/last.pt  last finished epoch (what --resume continues from)
      tensorboard/         TensorBoard logs when tensorboard is installed
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.factory import create_model
from pipeline.config import Config, config_to_dict, load_config, save_config
from pipeline.errors import ConfigError, ManifestError, PipelineError, RunError
from pipeline.files import write_atomic
from pipeline.manifest.labels import LabelMap
from pipeline.train.checkpoint import config_digest, load_checkpoint
from pipeline.train.outputs import probabilities
from transforms.chains import eval_chain, infer_chain

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
WEIGHTS_REPORT_FILE = "weights_report.json"
METRICS_FILE = "metrics.csv"
ENV_FILE = "env.json"
CHECKPOINT_DIR = "checkpoints"


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` (a numeric suffix when it exists already)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def git_revision() -> str | None:
    """The git commit of the radpipe source tree, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def env_info(cfg: Config, device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Versions, device and seed of a run (``env.json``)."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": version("monai"),
        "pytorch-ignite": version("pytorch-ignite"),
        "pydicom": version("pydicom"),
        "radpipe": version("radpipe"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "world_size": world_size,
        "seed": cfg.train.seed,
        "deterministic": cfg.train.deterministic,
        "git_revision": git_revision(),
        "hostname": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_run_files(
    run_dir: Path, cfg: Config, label_map: LabelMap, weights_report: dict[str, Any], env: dict[str, Any]
) -> None:
    """Write ``config.yaml``, ``labels.json``, ``weights_report.json`` and ``env.json``."""
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    label_map.save(run_dir / LABELS_FILE)
    write_atomic(run_dir / WEIGHTS_REPORT_FILE, json.dumps(weights_report, indent=2, default=str) + "\n")
    write_atomic(run_dir / ENV_FILE, json.dumps(env, indent=2, default=str) + "\n")


class MetricsLog:
    """``metrics.csv``: fixed columns, one row per epoch, rewritten atomically after each epoch.

    Args:
        path: the CSV file.
        columns: its columns in order.
        write: write the file (False on DDP ranks other than 0, which keep the rows in memory only).
    """

    def __init__(self, path: Path, columns: Sequence[str], write: bool = True) -> None:
        self.path = path
        self.columns = list(columns)
        self.write = write
        self.rows: list[dict[str, Any]] = []

    def load(self, up_to_epoch: int) -> None:
        """Keep the rows of an interrupted run up to ``up_to_epoch`` (the checkpoint's epoch)."""
        if self.path.is_file():
            self.rows = [r for r in _read_rows(self.path) if r.get("epoch") is not None and r["epoch"] <= up_to_epoch]

    def append(self, row: dict[str, Any]) -> None:
        """Add (or replace) the row of ``row["epoch"]`` and rewrite the file."""
        row = {k: (None if row.get(k, "") == "" else row[k]) for k in self.columns}
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(row["epoch"])] + [row]
        if not self.write:
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _cell(r.get(k)) for k in self.columns})
        write_atomic(self.path, out.getvalue())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def _read_rows(path: Path) -> list[dict[str, float | int | None]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append({k: None if v in ("", None) else (int(v) if k == "epoch" else float(v)) for k, v in r.items()})
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, float | int | None]]:
    """``metrics.csv`` of a run as a list of rows (numbers parsed, empty cells None).

    Raises:
        RunError: the run has no ``metrics.csv``.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"{path} not found; the run has not finished an epoch yet")
    return _read_rows(path)


@dataclass
class Run:
    """A trained run loaded back by :func:`load_run`.

    Attributes:
        run_dir: the run directory.
        cfg: its resolved config.
        label_map: its label map (task and classes).
        model: the model with the checkpoint's weights, in eval mode, on ``device``.
        eval_transform: the eval chain (deterministic preprocessing, with label) of the config.
        infer_transform: the same chain without the label (for cases with no label).
        checkpoint: which checkpoint was loaded (``best`` or ``last``).
        epoch: the epoch the checkpoint was written at.
        best_metric: the best validation key metric when it was written.
        device: where the model is.
    """

    run_dir: Path
    cfg: Config
    label_map: LabelMap
    model: torch.nn.Module
    eval_transform: Callable[[Any], Any]
    infer_transform: Callable[[Any], Any]
    checkpoint: str
    epoch: int
    best_metric: float | None
    device: torch.device

    @property
    def task(self) -> str:
        """``binary``, ``multiclass``, ``multilabel`` or ``regression``."""
        return self.label_map.task

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Model outputs to class probabilities (softmax / sigmoid) or regression values."""
        return probabilities(logits, self.task)


def build_model(model_info: dict[str, Any], dropout: float = 0.0) -> torch.nn.Module:
    """An untrained model of the architecture a checkpoint's ``model_info`` describes (no weights read)."""
    return create_model(
        model_info["name"],
        int(model_info["spatial_dims"]),
        int(model_info["in_channels"]),
        int(model_info["num_outputs"]),
        pretrained=None,
        dropout=dropout,
        **dict(model_info.get("options") or {}),
    )


def load_run(run_dir: str | Path, *, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """Load a finished (or interrupted) run for evaluation or prediction.

    Checks that ``config.yaml``, ``labels.json`` and ``checkpoints/<checkpoint>.pt`` exist and agree
    (same task, head size = number of classes), rebuilds the model from the config and the label
    map without downloading or reading any pretrained source, and loads the checkpoint's weights.

    Args:
        run_dir: the run directory written by ``radpipe train``.
        checkpoint: ``best`` (default) or ``last``.
        device: where to put the model.

    Raises:
        RunError: a file is missing, unreadable or inconsistent (the message names it and the reason).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"run directory {run} not found; give the --out folder of a radpipe train run")
    if checkpoint not in ("best", "last"):
        raise RunError(f"checkpoint {checkpoint!r}: expected 'best' or 'last'")
    for name in (CONFIG_FILE, LABELS_FILE, f"{CHECKPOINT_DIR}/{checkpoint}.pt"):
        if not (run / name).is_file():
            raise RunError(f"{run / name} is missing; the run is incomplete (train it again or --resume it)")
    try:
        cfg = load_config(run / CONFIG_FILE)
    except ConfigError as e:
        raise RunError(f"{run / CONFIG_FILE} does not parse: {e}") from e
    try:
        label_map = LabelMap.load(run / LABELS_FILE)
    except ManifestError as e:
        raise RunError(f"{run / LABELS_FILE} does not parse: {e}") from e
    if label_map.task != cfg.data.task:
        raise RunError(
            f"{run / LABELS_FILE}: task '{label_map.task}' differs from data.task '{cfg.data.task}' of "
            f"{run / CONFIG_FILE}; the files come from different runs"
        )
    ckpt_path = run / CHECKPOINT_DIR / f"{checkpoint}.pt"
    ckpt = load_checkpoint(ckpt_path)
    digest = ckpt.get("config_sha256")
    if isinstance(digest, str) and digest and digest != config_digest(config_to_dict(cfg)):
        logging.getLogger("radpipe").warning(
            "%s differs from the config %s was trained with (config_sha256); the preprocessing applied now may "
            "not be the trained one", run / CONFIG_FILE, ckpt_path)
    info = ckpt.get("model_info") or {}
    weights = ckpt["model"]
    head = weights.get("classifier.fc.weight", weights.get("members.0.classifier.fc.weight"))
    outputs = int(head.shape[0]) if head is not None else info.get("num_outputs")
    if outputs is not None and outputs != label_map.num_outputs:
        raise RunError(
            f"{ckpt_path}: the model head has {outputs} outputs but {run / LABELS_FILE} lists "
            f"{label_map.num_outputs} ({list(label_map.classes) or label_map.task}); the files come from different runs"
        )
    if not all(k in info for k in ("name", "spatial_dims", "in_channels")):
        raise RunError(f"{ckpt_path} has no model_info (name, dims, channels); it was not written by radpipe train")
    if info["name"] != cfg.model.name or int(info["spatial_dims"]) != cfg.transforms.spatial_dims:
        raise RunError(
            f"{ckpt_path} holds a {info['spatial_dims']}D {info['name']} but {run / CONFIG_FILE} asks for a "
            f"{cfg.transforms.spatial_dims}D {cfg.model.name}; the files come from different runs"
        )
    try:
        model = build_model({**info, "num_outputs": label_map.num_outputs}, cfg.model.dropout)
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, PipelineError) as e:
        raise RunError(
            f"{ckpt_path}: weights do not fit model '{cfg.model.name}' of {run / CONFIG_FILE}: "
            f"{' '.join(str(e).split())[:300]}"
        ) from e
    dev = torch.device(device)
    model.to(dev).eval()
    best = ckpt.get("best_metric")
    return Run(
        run_dir=run,
        cfg=cfg,
        label_map=label_map,
        model=model,
        eval_transform=eval_chain(cfg.transforms, cfg.data.image_columns),
        infer_transform=infer_chain(cfg.transforms, cfg.data.image_columns),
        checkpoint=checkpoint,
        epoch=int(ckpt.get("epoch", 0)),
        best_metric=None if best is None else float(best),
        device=dev,
    )
