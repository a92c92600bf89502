"""Data-parallel training under ``torchrun``: process group, samplers and gathers.

``torchrun --nproc-per-node N -m pipeline train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on CUDA, Gloo
on CPU). Shuffling is a pure function of ``(seed, epoch)`` (:class:`EpochSampler`) and augmentation
of ``(seed, epoch, case)`` (:class:`EpochSeededDataset`), so a resumed run sees the same
batches, augmented the same way, as an uninterrupted one, and every rank agrees on the order
without communicating.
"""
from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from transforms.seeding import Reseeder


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True under a multi-process launch."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a no-op.

    Args:
        device_type: ``cuda`` (NCCL backend, one GPU per local rank) or ``cpu`` (Gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group joined by :func:`init_distributed`, its worker threads joined.

    The DDP wrapper holds the group and sits in reference cycles (the engines' handlers), so
    ``destroy_process_group`` alone left the group alive until interpreter exit; a Gloo worker
    thread then released the last collective's tensors after Python had begun finalising and
    aborted the process (SIGABRT, "terminate called without an active exception", about 1 run in
    20 under load). Collecting the cycles first makes ``destroy_process_group`` drop the last
    reference, and the group's destructor joins its threads while the interpreter is whole.
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 31-bit seed derived from ``(seed, epoch, stream)``; distinct inputs give unrelated seeds."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, stream]).generate_state(1)[0] & 0x7FFFFFFF)


class EpochSampler(Sampler[int]):
    """Shuffled (or weighted) indices as a pure function of ``(seed, epoch)``, sharded over ranks.

    Training: every rank draws the same permutation (or weighted draw with replacement), pads
    it to a multiple of the world size and keeps every ``world_size``-th index from its rank,
    so all ranks run the same number of steps. Evaluation (``shuffle=False, pad=False``): rank
    ``r`` gets indices ``r, r + W, ...`` and the union over ranks is each case exactly once.

    Args:
        size: number of cases.
        seed: base seed of the run.
        shuffle: permute the indices each epoch.
        weights: per-case sampling weights (draw ``size`` indices with replacement); None: uniform.
        rank: this process's rank.
        world_size: number of processes.
        pad: repeat indices so every rank gets the same count.
        keyed: yield ``(epoch, index)`` keys for an :class:`EpochSeededDataset` instead of indices.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        keyed: bool = False,
    ) -> None:
        self.size = size
        self.keyed = keyed
        self.seed = seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.double)
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """All indices of this epoch before sharding."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and order:
            extra = (-len(order)) % self.world_size
            order = order + (order * (extra // len(order) + 1))[:extra]
        return order

    def __iter__(self) -> Iterator[Any]:
        shard = self.indices()[self.rank :: self.world_size]
        if self.keyed:
            return iter([(self.epoch, i) for i in shard])
        return iter(shard)

    def __len__(self) -> int:
        total = self.size
        if self.pad and self.world_size > 1:
            total += (-total) % self.world_size
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))


class EpochSeededDataset(Dataset):
    """A dataset whose random transforms are seeded by ``(seed, epoch, index)`` for every item.

    Takes the ``(epoch, index)`` keys of a keyed :class:`EpochSampler`. Augmentation then depends
    neither on worker processes (persistent or not), nor on the rank or batch an item falls in,
    nor on what ran before: a resumed run augments exactly like an uninterrupted one.

    Args:
        dataset: a MONAI dataset with a ``transform`` (``Compose``) attribute.
        seed: base seed of the run.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        transform = getattr(dataset, "transform", None)
        self._reseed = Reseeder(transform) if hasattr(transform, "set_random_state") else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if self._reseed is not None:
            self._reseed(epoch_seed(self.seed, epoch, stream=1_000_000 + int(index)))
        return self.dataset[int(index)]


def all_gather_rows(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor's rows from every rank (rows may differ in count), rank order."""
    if not info.enabled:
        return tensor
    from monai.utils import evenly_divisible_all_gather

    return evenly_divisible_all_gather(tensor.contiguous(), concat=True)


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> list[float]:
    """Sum a few floats over ranks (float64 on the CPU or the current CUDA device)."""
    if not info.enabled:
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().tolist()
