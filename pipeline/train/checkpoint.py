"""Checkpoints of a training run: atomic writes, RNG state, and loading back.

``last.pt`` (what ``--resume`` continues from) is a ``torch.save`` of a dict::

    {"model", "optimizer", "scheduler", "scaler", "epoch", "iteration", "best_metric", "best_epoch",
     "best_loss", "early_stop_state", "rng": {"torch", "numpy", "python", "cuda"}, "config", "model_info",
     "finished", "ema"}

``ema`` is there only when the run averages its weights (``train.ema``, see :mod:`pipeline.train.ema`):
``model`` then holds the averaged weights and ``ema`` the live ones (``live``) and the update count.

``best.pt`` holds only what inference needs (:func:`inference_checkpoint`): ``model``, ``model_info``,
``labels`` (the label map), ``config_sha256`` (digest of the resolved config, :func:`config_digest`),
``epoch``, ``iteration``, ``best_metric``, ``best_epoch``, ``best_loss``, ``key_metric`` and ``finished``;
no optimiser, scheduler, scaler or RNG state, so it is about the size of the weights.

``model_info`` (name, spatial_dims, in_channels, num_outputs, options) rebuilds the architecture
without any pretrained source; ``finished`` marks a run that reached its last epoch or stopped early.

``model`` is the state dict of the bare model (no DDP / ``torch.compile`` wrapper), so
``run:RUN_DIR`` weight sources and :func:`pipeline.train.run_dir.load_run` read ``["model"]``
directly. Checkpoints hold only tensors, numbers, strings and containers, so they load with
``torch.load(..., weights_only=True)`` (no code runs when a shared run is opened). Files are
written through :func:`pipeline.files.atomic_open`, so a kill at any moment leaves either the
previous or the new checkpoint, never a truncated one.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import RunError
from pipeline.files import atomic_open

#: the entries of ``last.pt`` that ``best.pt`` keeps (besides ``labels`` and ``config_sha256``)
INFERENCE_KEYS = ("model", "model_info", "epoch", "iteration", "best_metric", "best_epoch", "best_loss", "finished")


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of a resolved config (as :func:`pipeline.config.config_to_dict` gives it), key order ignored."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inference_checkpoint(state: dict[str, Any], labels: dict[str, Any] | None = None,
                         key_metric: str = "") -> dict[str, Any]:
    """The ``best.pt`` content of a full checkpoint ``state``: weights and what names them, no resume state.

    Args:
        state: the full checkpoint (as written to ``last.pt``).
        labels: the run's label map (``task``, ``classes``, ``label_columns``).
        key_metric: the metric that chose the epoch.
    """
    out = {k: state[k] for k in INFERENCE_KEYS if k in state}
    out["labels"] = dict(labels or {})
    out["config_sha256"] = config_digest(state["config"]) if state.get("config") is not None else ""
    out["key_metric"] = key_metric
    return out


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path`` (see :mod:`pipeline.files`)."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def rng_state() -> dict[str, Any]:
    """The state of every global random generator (torch, numpy, python and CUDA when present).

    Only tensors, numbers and tuples, so checkpoints load with ``torch.load(weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state` (CUDA only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save`.

    Raises:
        RunError: the file is missing, unreadable or not a radpipe checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found; train first (radpipe train) or give the right run directory")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise RunError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); retrain or restore it") from e
    if not isinstance(data, dict) or "model" not in data:
        raise RunError(f"checkpoint {path} has no 'model' entry; expected a radpipe checkpoint dict")
    return data


def restore_training(
    ckpt: dict[str, Any], trainer: Any, evaluator: Any, optimizer: Any, scheduler: Any, early_stop: Any,
    metrics_log: Any,
) -> None:
    """Put a resumed run's engines, optimiser, schedule, scaler and early-stop state where ``ckpt`` left them."""
    from ignite.engine import Events

    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    trainer.state.epoch = int(ckpt["epoch"])
    trainer.state.iteration = int(ckpt["iteration"])
    if ckpt.get("best_epoch", -1) >= 0:
        evaluator.state.best_metric = float(ckpt["best_metric"])
        evaluator.state.best_metric_epoch = int(ckpt["best_epoch"])
        best_loss = ckpt.get("best_loss")
        if hasattr(evaluator.metric_cmp_fn, "best_loss") and best_loss is not None:
            evaluator.metric_cmp_fn.best_loss = float(best_loss)
    if early_stop is not None and ckpt.get("early_stop_state"):
        early_stop._handler.load_state_dict(ckpt["early_stop_state"])
    metrics_log.load(int(ckpt["epoch"]))
    if ckpt.get("scaler"):

        @trainer.on(Events.STARTED)
        def _load_scaler(engine: Any) -> None:
            if engine.scaler is not None:
                engine.scaler.load_state_dict(ckpt["scaler"])
