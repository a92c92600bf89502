"""Does the data path keep up with training? Steady-state images/s with and without it.

For a 2D case (1x28x28, MedMNIST-like: the cheapest model step, so the hardest case for the
data path) and a 3D case (1x64x64x32 volumes), both read from NIfTI files written here, the
script times the same ResNet-18 train step (forward, backward, AdamW step):

* ``model``: fed one pre-made batch over and over (the upper bound);
* ``data path``: fed by the real path: ``CacheDataset`` over ``train_chain(cfg)`` (load ->
  reorient -> intensity -> size cached, then the ``light`` augmentation set per sample) and
  a data loader.

Each figure is the median of several timed windows after a warm-up; the ``model`` windows
run before and after the ``data path`` windows (so load drift on a shared machine hits
both), and the ratio data/model is the share of the step the data path leaves. Target:
>= 0.95. ``--sweep`` also times other loader settings to show what the defaults buy.

Usage::

    python benchmarks/loader.py [--cases 2d 3d] [--windows 5] [--sweep] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, ThreadDataLoader, set_track_meta
from monai.utils import set_determinism

from pipeline.config import Config, config_from_dict
from transforms.chains import train_chain


@dataclass(frozen=True)
class Case:
    """One benchmark case."""

    name: str
    shape: tuple[int, ...]  # file array shape
    size: tuple[int, ...]  # model input size
    n_files: int
    batch_size: int
    steps: int  # train steps per timed window


CASES = {
    "2d": Case("2D 1x28x28", (28, 28), (28, 28), 256, 64, 2),
    "3d": Case("3D 1x64x64x32", (64, 64, 32), (64, 64, 32), 16, 4, 2),
}


@dataclass(frozen=True)
class LoaderSetting:
    """How the cached dataset is iterated."""

    label: str
    kind: str  # "process" (monai DataLoader) or "thread" (ThreadDataLoader)
    workers: int
    track_meta: bool


DEFAULT = LoaderSetting("1 worker process, no metadata", "process", 1, False)
SWEEP = [
    LoaderSetting("main process, metadata kept", "process", 0, True),
    LoaderSetting("main process, no metadata", "process", 0, False),
    LoaderSetting("thread loader, no metadata", "thread", 0, False),
    LoaderSetting("2 worker processes, no metadata", "process", 2, False),
]


def write_files(case: Case, folder: Path) -> list[dict]:
    """NIfTI files of a blob on noise, in HU-like values; the sample dicts of the dataset."""
    rng = np.random.default_rng(0)
    data = []
    for i in range(case.n_files):
        arr = rng.normal(-800.0, 60.0, case.shape).astype(np.float32)
        centre = tuple(slice(s // 4, 3 * s // 4) for s in case.shape)
        arr[centre] += 850.0 + 40.0 * (i % 2)
        path = folder / f"case{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
        data.append({"image": str(path), "label": i % 2})
    return data


def make_config(case: Case) -> Config:
    return config_from_dict(
        {
            "transforms": {
                "spatial_dims": len(case.size),
                "size": list(case.size),
                "intensity": "ct-abdomen",
                "augment": "light",
                "augment_prob": 0.5,
                "device": "cpu",
            },
            "train": {"batch_size": case.batch_size, "device": "cpu"},
        }
    )


def make_model(case: Case) -> torch.nn.Module:
    try:
        from models import create_model

        return create_model("resnet18", len(case.size), 1, 2)
    except ImportError:  # models package not there: the same MONAI network
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=len(case.size), n_input_channels=1, num_classes=2)


def make_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def timed_windows(next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], step, case: Case,
                  windows: int, warmup: int) -> list[float]:
    """Images/s of each window of ``case.steps`` train steps, after ``warmup`` steps."""
    for _ in range(warmup):
        step(*next_batch())
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(case.steps):
            step(*next_batch())
        rates.append(case.steps * case.batch_size / (time.perf_counter() - start))
    return rates


def endless(loader) -> Iterator[dict]:
    while True:
        yield from loader


def data_rates(case: Case, data: list[dict], setting: LoaderSetting, step, windows: int) -> list[float]:
    cfg = make_config(case)
    set_track_meta(True)
    dataset = CacheDataset(data, train_chain(cfg, device="cpu"), progress=False, num_workers=1)
    if not setting.track_meta:
        set_track_meta(False)  # as the trainer does once the whole set is cached (metadata_free_after_cache)
    if setting.kind == "thread":
        loader = ThreadDataLoader(dataset, batch_size=case.batch_size, shuffle=True, num_workers=0, drop_last=True)
    else:
        extra = {"persistent_workers": True, "prefetch_factor": 4} if setting.workers else {}
        loader = DataLoader(dataset, batch_size=case.batch_size, shuffle=True, num_workers=setting.workers,
                            drop_last=True, pin_memory=False, **extra)
    batches = endless(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(batches)
        return torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])

    try:
        return timed_windows(next_batch, step, case, windows, warmup=4)
    finally:
        set_track_meta(True)
        del batches, loader


def run_case(case: Case, settings: list[LoaderSetting], windows: int) -> list[tuple[str, float, float, float]]:
    set_determinism(0)
    step = make_step(make_model(case))
    x = torch.rand(case.batch_size, 1, *case.size)
    y = torch.randint(0, 2, (case.batch_size,))
    half = max(2, windows // 2 + 1)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_files(case, Path(tmp))
        model_rates = timed_windows(lambda: (x, y), step, case, half, warmup=3)
        results = []
        for setting in settings:
            results.append((setting.label, statistics.median(data_rates(case, data, setting, step, windows))))
            print(f"  {case.name}, {setting.label}: {results[-1][1]:.1f} img/s", file=sys.stderr, flush=True)
        model_rates += timed_windows(lambda: (x, y), step, case, half, warmup=1)
    model = statistics.median(model_rates)
    spread = (max(model_rates) - min(model_rates)) / model
    return [(label, rate, model, spread) for label, rate in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["2d", "3d"])
    parser.add_argument("--windows", type=int, default=5, help="timed windows per figure (median taken)")
    parser.add_argument("--sweep", action="store_true", help="also time other loader settings")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the train step (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [DEFAULT, *(SWEEP if args.sweep else [])]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ResNet-18, AdamW, 'light' augmentation")
    header = f"{'case':<15} {'batch':>5} {'loader':<34} {'model img/s':>11} {'data img/s':>10} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name in args.cases:
        case = CASES[name]
        for label, rate, model, spread in run_case(case, settings, args.windows):
            ok = "" if rate / model >= 0.95 else "  < 0.95"
            print(f"{case.name:<15} {case.batch_size:>5} {label:<34} {model:>11.1f} {rate:>10.1f} "
                  f"{rate / model:>6.3f}{ok}")
        print(f"{'':<15} model windows spread {spread:.1%} (max-min over median)")
    print(GPU_NOTES)
    return 0


GPU_NOTES = """
On a GPU: the step gets 50-200x faster, so the per-sample CPU path cannot keep up through worker
processes alone. What keeps it fed: cache the deterministic part in memory (CacheDataset), move each
case to the GPU once (train_chain(cfg, device='cuda') starts the random part with ToDeviced), run the
augmentation there and iterate with ThreadDataLoader (num_workers=0) after set_track_meta(False);
use AMP and channels-last for 2D. Left: per-sample transform launch overhead (batch-level GPU
augmentation would remove it) and, for large 3D volumes, more workers for cache filling."""


if __name__ == "__main__":
    raise SystemExit(main())
