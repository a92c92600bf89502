"""Batched inference shared by ``radpipe evaluate`` and ``radpipe predict``.

Reading and preprocessing run in DataLoader worker processes while the model runs in the main
process. A case that cannot be read or preprocessed never stops the batch:
:class:`CaseDataset` catches the error and returns an error record, and :func:`collate_cases`
separates good images (stacked into one tensor) from errors. :class:`Predictor` runs the model
under ``torch.inference_mode`` (AMP and channels-last on CUDA), optionally averaging over flips
(test-time augmentation), and turns outputs into probabilities.

Output conventions (the columns of every predictions CSV):
    * ``binary`` / ``multiclass``: ``prob_<class>`` per class, summing to 1 (softmax; a single-logit binary
      model gives ``sigmoid`` and its complement); ``pred`` is the most probable class. Binary: ``pred`` is
      ``classes[1]`` when its probability (as written, 6 decimals) is >= the operating point (see
      :mod:`pipeline.operating_point`), else ``classes[0]``; the ``threshold`` column says which threshold was
      applied (``argmax``: none, ``classes[1]`` when its probability is >= 0.5).
    * ``multilabel``: ``prob_<class>`` = sigmoid of each output; ``pred`` joins the classes with
      probability >= 0.5 with ``;``.
    * ``regression``: ``pred`` is the model output.
Probabilities are written with 6 decimals.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.train.outputs import probabilities
from pipeline.train.precision import amp_dtype

log = logging.getLogger("radpipe")

PROB_DECIMALS = 6
_MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Case:
    """One case to predict.

    Attributes:
        id: stable id (the ``series_id`` column).
        inputs: transform input: one path per image column.
        error: why the case cannot be predicted, found before reading it (empty: try it).
    """

    id: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass
class CaseBatch:
    """What :func:`collate_cases` makes of a list of dataset records."""

    ids: list[str]
    images: torch.Tensor | None
    affines: list[torch.Tensor | None]
    errors: list[tuple[str, str]]

    def pin_memory(self) -> CaseBatch:
        """Pin the images (the DataLoader calls this with ``pin_memory=True``) for asynchronous copies."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def describe_error(error: BaseException, scrub: Callable[[str], str] | None = None) -> str:
    """One line saying what went wrong: the innermost error, and the MONAI transform it came from."""
    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or nxt in chain or len(chain) > 10:
            break
        chain.append(nxt)
    root = chain[-1]
    transform = ""
    for e in chain:
        match = re.search(r"applying transform <?([\w.]+)", str(e))
        if match:
            transform = match.group(1).rsplit(".", 1)[-1]
    message = " ".join(str(root).split()) or repr(root)
    text = f"{type(root).__name__}: {message}"
    if transform:
        text = f"in {transform}: {text}"
    if scrub is not None:
        text = scrub(text)
    return text[:_MAX_ERROR_CHARS]


class CaseDataset(torch.utils.data.Dataset):
    """Preprocessed cases; errors are returned as records, never raised.

    Args:
        cases: the cases.
        transform: the run's eval / infer chain: dict of image paths -> dict with ``"image"``.
        expected_shape: ``(C, *spatial)`` the model needs; a case of another shape becomes an error.
        scrub: applied to error messages (e.g. to hide folder names of a hospital export).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        transform: Callable[[dict[str, Any]], Mapping[str, Any]],
        expected_shape: Sequence[int] | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.cases = list(cases)
        self.transform = transform
        self.expected_shape = tuple(expected_shape) if expected_shape else None
        self.scrub = scrub

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        if case.error:
            return {"id": case.id, "error": case.error}
        try:
            out = self.transform(dict(case.inputs))
            image = out["image"]
            affine = getattr(image, "affine", None)
            if isinstance(image, torch.Tensor):
                tensor = image.detach().as_subclass(torch.Tensor).float().contiguous()
            else:
                tensor = torch.as_tensor(np.asarray(image), dtype=torch.float32)
            shape_error = check_shape(tuple(tensor.shape), self.expected_shape)
            if shape_error:
                return {"id": case.id, "error": shape_error}
            if not torch.isfinite(tensor).all():
                return {"id": case.id, "error": "preprocessed image holds NaN or infinite values"}
            return {
                "id": case.id,
                "image": tensor,
                "affine": torch.as_tensor(affine, dtype=torch.float64).clone() if affine is not None else None,
            }
        except Exception as e:  # noqa: BLE001 - any failure of one case becomes that case's error row
            return {"id": case.id, "error": describe_error(e, self.scrub)}


def check_shape(found: tuple[int, ...], expected: tuple[int, ...] | None) -> str:
    """Why a preprocessed image does not fit the model (empty when it does)."""
    if expected is None or found == expected:
        return ""
    if len(found) != len(expected):
        return (
            f"wrong dimensionality: preprocessed image has shape {list(found)} ({len(found) - 1} spatial dims), "
            f"the model takes {list(expected)} ({len(expected) - 1} spatial dims)"
        )
    if found[0] != expected[0]:
        return f"wrong number of channels: preprocessed image has {found[0]}, the model takes {expected[0]}"
    return f"preprocessed image has shape {list(found)}, the model takes {list(expected)}"


def collate_cases(records: Sequence[Mapping[str, Any]]) -> CaseBatch:
    """Stack the good images of a list of records and list the errors apart."""
    good = [r for r in records if "image" in r]
    errors = [(r["id"], r["error"]) for r in records if "image" not in r]
    images = torch.stack([r["image"] for r in good]) if good else None
    return CaseBatch([r["id"] for r in good], images, [r.get("affine") for r in good], errors)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_case_loader(dataset: CaseDataset, batch_size: int, workers: int, pin_memory: bool = False
                     ) -> torch.utils.data.DataLoader:
    """A loader reading cases in order with ``workers`` processes (0: in the main process)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_cases,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def default_workers() -> int:
    """Loader worker processes: one less than this process's share of the CPUs, at most 4 (0 on one CPU).

    Under torchrun the CPUs are shared among the ``LOCAL_WORLD_SIZE`` processes of the machine.
    """
    return max(0, min(4, cpu_share() - 1))


def cpu_share() -> int:
    """CPUs of this process: all of them, or its part under torchrun (``LOCAL_WORLD_SIZE`` processes)."""
    return max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def resolve_device(name: str | None, cfg_device: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; ``None`` takes the run's ``train.device``.

    Under torchrun each process takes the GPU of its ``LOCAL_RANK``.

    Raises:
        ConfigError: ``cuda`` is asked for and there is none.
    """
    wanted = name or cfg_device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)  # torchrun: one GPU per process
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def device_for_run(run_dir: str | Path, name: str | None) -> torch.device:
    """Where a run's model runs: ``name``, else the run's ``train.device`` (read before the run is loaded)."""
    try:
        cfg_device = load_config(Path(run_dir) / "config.yaml").train.device
    except ConfigError:
        cfg_device = "cpu"  # load_run reports the broken or missing config with its reason
    return resolve_device(name, cfg_device)


@contextmanager
def inference_threads(device: torch.device, workers: int) -> Iterator[int]:
    """Give the model the CPU cores the loader workers leave (CPU inference only), restored afterwards.

    Loader workers run one thread each; a model using every core as well oversubscribes the CPU,
    which costs far more than the idle core saves.
    """
    before = torch.get_num_threads()
    threads = before
    if device.type == "cpu" and workers > 0:
        threads = max(1, min(before, cpu_share() - workers))
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def model_in_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (None if it has none)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(module.in_channels)
    return None


def expected_input_shape(model: nn.Module, size: Sequence[int]) -> tuple[int, ...] | None:
    """``(C, *size)`` of the model's input, or None when the channels cannot be told."""
    channels = model_in_channels(model)
    return (channels, *size) if channels and size else None


class Predictor:
    """Runs a model over batches of preprocessed images.

    Args:
        model: the network (moved to ``device``, put in eval mode).
        task: the run's task.
        device: where to run.
        amp: autocast on CUDA (bf16 where supported, else fp16), and on a CPU with ``cpu_bf16``.
        channels_last: channels-last memory format on CUDA (and on a CPU that autocasts).
        cpu_bf16: the run's ``train.cpu_bf16`` (see :func:`~pipeline.train.precision.amp_dtype`).
        tta: average the probabilities over copies of each image (:func:`tta_views`): ``flips`` (or True),
            ``dihedral``, ``train-flips``; False or ``""``: none.
        flip_axes: the axes ``train-flips`` flips (the run's ``transforms.flip_axes``).
    """

    def __init__(self, model: nn.Module, task: str, device: torch.device | str = "cpu", amp: bool = True,
                 channels_last: bool = True, tta: bool | str = False, cpu_bf16: bool = False,
                 flip_axes: Sequence[int] = (0, 1)) -> None:
        self.device = torch.device(device)
        self.task = task
        self.tta = "flips" if tta is True else (tta or "")
        self.flip_axes = tuple(flip_axes)
        self.amp_dtype: torch.dtype | None = amp_dtype(self.device, cpu_bf16) if amp else None
        self.memory_format: torch.memory_format | None = None
        self.model = model.to(self.device).eval()
        self._channels_last = channels_last and (self.device.type == "cuda" or self.amp_dtype is not None)

    @classmethod
    def for_run(cls, run: Any, tta: str = "") -> Predictor:
        """The predictor of a loaded run (``run.model``, ``run.label_map``, ``run.device``, ``run.cfg``): its AMP,
        channels-last and CPU bf16 settings, and ``tta`` views over its ``transforms.flip_axes``."""
        cfg = run.cfg
        return cls(run.model, run.label_map.task, run.device, amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                   tta=tta, cpu_bf16=cfg.train.cpu_bf16, flip_axes=cfg.transforms.flip_axes)

    def _format(self, images: torch.Tensor) -> torch.Tensor:
        if not self._channels_last or images.ndim not in (4, 5) or (images.ndim == 5 and self.device.type == "cpu"):
            return images
        fmt = torch.channels_last if images.ndim == 4 else torch.channels_last_3d
        if self.memory_format != fmt:
            self.model = self.model.to(memory_format=fmt)
            self.memory_format = fmt
        return images.contiguous(memory_format=fmt)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else nullcontext())
        with autocast:
            logits = self.model(images)
        return probabilities(logits.float(), self.task)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Probabilities (or regression values) of a batch, shape (B, K), as float64 numpy."""
        with torch.inference_mode():
            images = self._format(images.to(self.device, non_blocking=True))
            if not self.tta:
                probs = self._forward(images)
            else:
                views = 0
                for view in tta_views(images, self.tta, self.flip_axes):
                    probs = self._forward(view) if views == 0 else probs + self._forward(view)
                    views += 1
                probs = probs / views
        return probs.double().cpu().numpy()


def resolve_tta(eval_cfg: Any, tta: bool | None, views: str | None) -> str:
    """The TTA views a command uses: ``""`` (none), ``flips``, ``dihedral`` or ``train-flips``; None options take
    the run's ``eval.tta`` and ``eval.tta_views`` (``evaluate`` and ``predict`` resolve them alike)."""
    use = eval_cfg.tta if tta is None else tta
    return (views or eval_cfg.tta_views) if use else ""


def tta_views(images: torch.Tensor, kind: str, flip_axes: Sequence[int] = (0, 1)) -> Iterator[torch.Tensor]:
    """The copies of a batch (B, C, x, y[, z]) that test-time augmentation averages over, the batch itself first.

    ``flips``: one flip along each spatial axis (2D: 3 views, 3D: 4). ``train-flips``: one flip along each of
    ``flip_axes``, the flips the training augmentation makes (``transforms.flip_axes``; an oriented image's
    left-right axis alone: 2 views). ``dihedral``: the turns and flips of the (x, y) plane the default training
    augmentation makes (flips along x and y, 90-degree turns of square planes): the 8 of the dihedral group for a
    square plane, else the 4 of flips and the half turn; in 3D each of those also flipped along z.
    """
    if kind in ("flips", "train-flips"):
        yield images
        axes = range(images.ndim - 2) if kind == "flips" else flip_axes
        for axis in axes:
            yield torch.flip(images, dims=(axis + 2,))
        return
    if kind != "dihedral":
        raise ValueError(f"unknown TTA views {kind!r}; expected flips, train-flips or dihedral")
    turns = (0, 1, 2, 3) if images.shape[2] == images.shape[3] else (0, 2)
    for k in turns:
        turned = torch.rot90(images, k, dims=(2, 3)) if k else images
        for plane in (turned, torch.flip(turned, dims=(3,))):
            yield plane
            if images.ndim == 5:
                yield torch.flip(plane, dims=(4,))


def iterate_predictions(loader: torch.utils.data.DataLoader, predictor: Predictor
                        ) -> Iterator[tuple[CaseBatch, np.ndarray]]:
    """Yield each batch with its probabilities (an empty array when the batch holds only errors)."""
    for batch in loader:
        probs = predictor(batch.images) if batch.images is not None else np.zeros((0, 0))
        yield batch, probs


def prediction_columns(task: str, classes: Sequence[str]) -> list[str]:
    """The prediction columns of a task: ``pred`` (binary: then ``threshold``), then ``prob_<class>`` per class."""
    if task == "regression":
        return ["pred"]
    binary = ["threshold"] if task == "binary" and len(classes) == 2 else []
    return ["pred", *binary, *[f"prob_{c}" for c in classes]]


def prediction_fields(task: str, classes: Sequence[str], probs: np.ndarray,
                      threshold: float | None = None) -> dict[str, str]:
    """The ``pred``, ``threshold`` (binary) and ``prob_<class>`` cells of one case.

    Args:
        task: the run's task.
        classes: its classes.
        probs: the case's probabilities (regression: its output).
        threshold: binary: ``classes[1]`` is called when its written probability is >= this; None: the argmax.
    """
    if task == "regression":
        return {"pred": f"{float(probs[0]):.6g}"}
    fields = {f"prob_{c}": f"{float(p):.{PROB_DECIMALS}f}" for c, p in zip(classes, probs)}
    if task == "multilabel":
        fields["pred"] = ";".join(c for c, p in zip(classes, probs) if p >= 0.5)
    elif task == "binary" and len(classes) == 2:
        cut = 0.5 if threshold is None else threshold
        fields["pred"] = classes[1] if round(float(probs[1]), PROB_DECIMALS) >= cut else classes[0]
        fields["threshold"] = "argmax" if threshold is None else f"{threshold:.10g}"
    else:
        fields["pred"] = classes[int(np.argmax(probs))]
    return fields
