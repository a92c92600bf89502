"""Does the data path keep up with training? Steady-state images/s with and without it.

For a 2D case (1x28x28, MedMNIST-like: the cheapest model step, so the hardest case for the
data path) and a 3D case (1x64x64x32 volumes), both read from NIfTI files written here, the
script times the same ResNet-18 train step (forward, backward, AdamW step) fed two ways:

* ``model``: one pre-made batch over and over (the upper bound);
* ``data``: the real path: ``CacheDataset`` over ``train_chain(cfg.transforms, cfg.data.image_columns)`` (load -> reorient ->
  CT window -> size cached, then the ``light`` augmentation set per sample) and a loader.

Two figures per loader setting:

* wall clock, paired: each round times one ``model`` step and one ``data`` step (fetch + step)
  back to back (in alternating order), so load from other processes on a shared machine hits
  both alike; the ratio is the median over rounds of model time / data time (= data img/s /
  model img/s);
* CPU time: CPU ms per image of the model step alone (least of 5 steps) and of the data path
  alone (main process plus worker processes, loader iterated without a model); ``cpu ratio`` =
  model / (model + data) is the throughput left when the data path competes with the step for
  every core, and is far less sensitive to other load on a shared machine than wall clock.

Target: ratio >= 0.95 (the data path costs at most 5 % of the step). ``--sweep`` also times
other loader settings to show what the default buys.

A third case, ``jpeg``, is the ImageNet recipe on pictures (``data_manifests/imagenet_transfer_2d.yaml``):
RGB JPEG files of 512x512 (a chest X-ray set's size after the usual downscale) decoded, resized to 224x224,
ImageNet-normalised and augmented *every epoch* (``cache: none``, as a set too large for memory runs), by
worker processes (``monai.data.DataLoader``), against a 3-channel ResNet-18 step at 224 px. ``img/s/core``
is what one core decodes and preprocesses (images per CPU second of the data path): with the GPU doing the
step, the cores needed to feed it are the GPU's img/s divided by this.

Usage::

    python benchmarks/loader.py [--cases 2d 3d jpeg] [--rounds 8] [--sweep] [--threads N]
"""
from __future__ import annotations

import argparse
import os
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
from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader, set_track_meta
from monai.utils import set_determinism

from pipeline.config import Config, config_from_dict
from transforms.chains import train_chain

Step = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class Case:
    """One benchmark case."""

    name: str
    size: tuple[int, ...]  # model input size (= file array shape for NIfTI cases)
    n_files: int
    batch_size: int
    channels: int = 1
    pictures: int = 0  # > 0: RGB JPEG files of this side, decoded every epoch (no cache)


CASES = {
    "2d": Case("2D 1x28x28", (28, 28), 256, 64),
    "3d": Case("3D 1x64x64x32", (64, 64, 32), 16, 4),
    "jpeg": Case("JPEG 3x224x224", (224, 224), 64, 16, channels=3, pictures=512),
}


@dataclass(frozen=True)
class LoaderSetting:
    """How the cached dataset is iterated."""

    label: str
    kind: str  # "process" (monai DataLoader) or "thread" (ThreadDataLoader)
    workers: int
    track_meta: bool
    copy_cache: bool = False


#: What the trainer does when the training set is cached in memory, on CPU as on CUDA.
DEFAULT = LoaderSetting("thread loader, no metadata", "thread", 0, False)
#: Pictures decoded every epoch: worker processes beside the step (metadata kept: the chain needs affines).
PICTURE_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
DECODING = LoaderSetting(f"{PICTURE_WORKERS} worker process(es), decoded each epoch", "process", PICTURE_WORKERS, True)
SWEEP = [
    LoaderSetting("main process, metadata, copy_cache", "process", 0, True, copy_cache=True),
    LoaderSetting("main process, no metadata", "process", 0, False),
    LoaderSetting("1 worker process, no metadata", "process", 1, False),
    LoaderSetting("2 worker processes, no metadata", "process", 2, False),
]


def write_files(case: Case, folder: Path) -> list[dict]:
    """NIfTI files of a blob on noise, in HU-like values (RGB JPEGs for a picture case); the sample dicts."""
    rng = np.random.default_rng(0)
    data = []
    if case.pictures:
        from PIL import Image

        side = case.pictures
        for i in range(case.n_files):
            arr = rng.normal(90.0, 30.0, (side, side, 3)).clip(0, 255)
            arr[side // 4: 3 * side // 4, side // 4: 3 * side // 4] += 60.0 + 30.0 * (i % 2)
            path = folder / f"case{i:04d}.jpg"
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            data.append({"image": str(path), "label": i % 2})
        return data
    for i in range(case.n_files):
        arr = rng.normal(-800.0, 60.0, case.size).astype(np.float32)
        arr[tuple(slice(s // 4, 3 * s // 4) for s in case.size)] += 850.0 + 40.0 * (i % 2)
        path = folder / f"case{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
        data.append({"image": str(path), "label": i % 2})
    return data


def make_config(case: Case) -> Config:
    t = {"spatial_dims": len(case.size), "size": list(case.size), "intensity": "ct-abdomen", "augment": "light",
         "augment_prob": 0.5, "device": "cpu"}
    if case.pictures:
        t.update({"intensity": "imagenet", "channels": "rgb", "orientation": ""})
    return config_from_dict({"transforms": t, "train": {"batch_size": case.batch_size, "device": "cpu"}})


def make_model(case: Case) -> torch.nn.Module:
    try:
        from models import create_model

        return create_model("resnet18", len(case.size), case.channels, 2)
    except ImportError:  # models package not there: the same MONAI network
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=len(case.size), n_input_channels=case.channels, num_classes=2)


def make_step(model: torch.nn.Module) -> Step:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process (all threads) plus the processes ``pids`` (Linux /proc)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def make_loader(case: Case, data: list[dict], setting: LoaderSetting):
    set_track_meta(True)
    cfg = make_config(case)
    chain = train_chain(cfg.transforms, cfg.data.image_columns, device="cpu")
    dataset = Dataset(data, chain) if case.pictures else CacheDataset(
        data, chain, progress=False, num_workers=1, copy_cache=setting.copy_cache)
    if not setting.track_meta:
        set_track_meta(False)  # as the trainer does once the whole set is cached (metadata_free_after_cache)
    if setting.kind == "thread":
        return ThreadDataLoader(dataset, batch_size=case.batch_size, shuffle=True, num_workers=0, drop_last=True)
    extra = {"persistent_workers": True, "prefetch_factor": 2} if setting.workers else {}
    return DataLoader(dataset, batch_size=case.batch_size, shuffle=True, num_workers=setting.workers,
                      drop_last=True, pin_memory=False, **extra)


def endless(loader) -> Iterator[dict]:
    while True:
        yield from loader


def worker_pids(loader) -> list[int]:
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
    return [w.pid for w in workers if w.pid]


@dataclass
class Result:
    label: str
    model_rate: float  # img/s, median of the paired rounds
    data_rate: float
    ratio: float  # median over rounds of model time / data time
    model_cpu_ms: float  # CPU ms per image
    data_cpu_ms: float


def measure(case: Case, data: list[dict], setting: LoaderSetting, step: Step, x: torch.Tensor, y: torch.Tensor,
            rounds: int, model_cpu_ms: float) -> Result:
    loader = make_loader(case, data, setting)
    batches = endless(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(batches)
        return torch.as_tensor(batch["image"]), torch.as_tensor(batch["label"])

    try:
        for _ in range(2):  # warm-up: workers start, caches and allocator settle
            step(*next_batch())
        model_times, data_times = [], []
        for i in range(rounds):  # the order alternates so neither kind always follows the other
            for kind in ("model", "data") if i % 2 == 0 else ("data", "model"):
                t0 = time.perf_counter()
                step(*((x, y) if kind == "model" else next_batch()))
                (model_times if kind == "model" else data_times).append(time.perf_counter() - t0)
        n_batches = max(4, 512 // case.batch_size)  # the data path alone, for its CPU time
        pids = worker_pids(loader)
        c0 = cpu_seconds(pids)
        for _ in range(n_batches):
            next_batch()
        data_cpu = (cpu_seconds(pids) - c0) / (n_batches * case.batch_size)
    finally:
        set_track_meta(True)
        del batches, loader
    ratios = [m / d for m, d in zip(model_times, data_times)]
    return Result(setting.label, case.batch_size / statistics.median(model_times),
                  case.batch_size / statistics.median(data_times), statistics.median(ratios),
                  model_cpu_ms, data_cpu * 1e3)


def model_cpu_ms(step: Step, x: torch.Tensor, y: torch.Tensor, steps: int = 5) -> float:
    """CPU ms per image of the step: the least of ``steps`` steps (busy machines inflate CPU time
    through OpenMP spin-waiting; the least-disturbed step is the closest to the step's own cost)."""
    step(x, y)
    costs = []
    for _ in range(steps):
        c0 = cpu_seconds([])
        step(x, y)
        costs.append(cpu_seconds([]) - c0)
    return min(costs) / x.shape[0] * 1e3


def run_case(case: Case, settings: list[LoaderSetting], rounds: int) -> list[Result]:
    set_determinism(0)
    step = make_step(make_model(case))
    x = torch.rand(case.batch_size, case.channels, *case.size)
    y = torch.randint(0, 2, (case.batch_size,))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_files(case, Path(tmp))
        model_ms = model_cpu_ms(step, x, y)
        for setting in settings:
            results.append(measure(case, data, setting, step, x, y, rounds, model_ms))
            r = results[-1]
            print(f"  {case.name}, {r.label}: ratio {r.ratio:.3f}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["2d", "3d", "jpeg"])
    parser.add_argument("--rounds", type=int, default=8, help="paired rounds per setting (median taken)")
    parser.add_argument("--sweep", action="store_true", help="also time other loader settings")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the train step (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, ResNet-18 + AdamW, "
          f"'light' augmentation, {args.rounds} paired rounds")
    header = (f"{'case':<14} {'batch':>5} {'loader':<38} {'model img/s':>11} {'data img/s':>10} {'ratio':>6} "
              f"{'model cpu ms/img':>16} {'data cpu ms/img':>15} {'cpu ratio':>9} {'img/s/core':>10}")
    print(header)
    print("-" * len(header))
    for name in args.cases:
        case = CASES[name]
        settings = [DECODING] if case.pictures else [DEFAULT, *(SWEEP if args.sweep else [])]
        for r in run_case(case, settings, args.rounds):
            cpu_ratio = r.model_cpu_ms / (r.model_cpu_ms + r.data_cpu_ms)
            flag = "" if min(r.ratio, cpu_ratio) >= 0.95 else "  < 0.95"
            print(f"{case.name:<14} {case.batch_size:>5} {r.label:<38} {r.model_rate:>11.1f} {r.data_rate:>10.1f} "
                  f"{r.ratio:>6.3f} {r.model_cpu_ms:>16.1f} {r.data_cpu_ms:>15.2f} {cpu_ratio:>9.3f} "
                  f"{1e3 / r.data_cpu_ms:>10.0f}{flag}")
    print(GPU_NOTES)
    return 0


GPU_NOTES = """
On a GPU the step gets 50-200x faster, and the CPU data path becomes the bottleneck. What keeps it fed:
cache the deterministic part in memory (CacheDataset, copy_cache=False), move each case to the GPU
once (train_chain(cfg.transforms, cfg.data.image_columns, device='cuda') starts the random part with ToDeviced), run the augmentation
there, iterate with ThreadDataLoader (num_workers=0) after set_track_meta(False), and use AMP and
channels-last for 2D. Left: per-sample transform launch overhead for small 2D images (batch-level GPU
augmentation would remove it) and cache filling of large 3D sets (CacheDataset num_workers)."""


if __name__ == "__main__":
    raise SystemExit(main())
