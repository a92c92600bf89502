"""Data-parallel training: epoch-seeded sharded samplers, and a 2-process Gloo run under torchrun."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import save_config, with_changes
from pipeline.train.distributed import DistInfo, EpochSampler, all_gather_rows, epoch_seed
from pipeline.train.launch import train
from train_helpers import metric_rows, small_config, write_blob_manifest


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    second = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == first and sorted(first) == list(range(10)) and first != second
    assert list(EpochSampler(10, seed=4)) != list(EpochSampler(10, seed=3))
    assert epoch_seed(0, 1) != epoch_seed(0, 2) != epoch_seed(1, 1)


def test_epoch_sampler_shards_over_ranks():
    shards = [EpochSampler(11, seed=0, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in shards] == [6, 6] and [len(list(s)) for s in shards] == [6, 6]
    assert set(list(shards[0]) + list(shards[1])) == set(range(11))
    single = EpochSampler(11, seed=0).indices()
    assert list(shards[0]) == (single + single[:1])[0::2]
    evals = [EpochSampler(11, shuffle=False, rank=r, world_size=2, pad=False) for r in range(2)]
    assert [list(s) for s in evals] == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9]] and len(evals[1]) == 5


def test_weighted_epoch_sampler_draws_by_weight():
    sampler = EpochSampler(4, seed=0, weights=[1.0, 0.0, 0.0, 3.0])
    draws = [i for epoch in range(200) for i in (sampler.set_epoch(epoch), list(sampler))[1]]
    assert set(draws) == {0, 3} and 0.70 < draws.count(3) / len(draws) < 0.80


def test_gather_is_identity_in_one_process():
    t = torch.arange(6).reshape(3, 2)
    assert torch.equal(all_gather_rows(t, DistInfo()), t)


#: ``radpipe train`` with the thread count of each rank printed around ``shutdown_distributed``: a process group
#: left alive past it let a Gloo worker thread free the last all-gather's tensors during interpreter
#: finalisation, which aborted a rank (SIGABRT) about once in 20 loaded runs.
_TRAIN_COUNTING_THREADS = """
import os, sys
import pipeline.train.session as session
shutdown = session.shutdown_distributed
def counted(info):
    before = len(os.listdir("/proc/self/task"))
    shutdown(info)
    sys.stdout.write(f"rank {info.rank} threads {before} -> {len(os.listdir('/proc/self/task'))}\\n")  # one write
    sys.stdout.flush()
session.shutdown_distributed = counted
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_process_gloo_run_matches_one_process(tmp_path):
    """2 ranks x batch 4 equal 1 process x batch 8: same batches and augmentation, averaged gradients,
    gathered metrics (11 validation cases: uneven shards).

    A linear probe keeps BatchNorm in eval mode, so per-rank batch statistics (no SyncBatchNorm on CPU)
    cannot make the runs differ; what is compared is sharding, gradient averaging and metric gathering.
    """
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=24, n_val=11, n_test=0)
    base = with_changes(small_config(2, epochs=2, lr=0.02, scheduler="none"), transfer={"strategy": "linear-probe"},
                        transforms={"augment": "light"})
    cfg_path = tmp_path / "ddp.yaml"
    save_config(with_changes(base, train={"batch_size": 4}), cfg_path)
    script = tmp_path / "train_counting_threads.py"
    script.write_text(_TRAIN_COUNTING_THREADS)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(script), "train", "--config", str(cfg_path), "--manifest", str(manifest),
               "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run: ") == 1  # only rank 0 reports (and writes)
    if Path("/proc/self/task").is_dir():  # each rank's Gloo worker threads are joined when training returns
        counts = re.findall(r"rank (\d+) threads (\d+) -> (\d+)", done.stdout)  # the ranks share one stdout
        assert sorted(c[0] for c in counts) == ["0", "1"], done.stdout
        assert all(int(during) > int(after) == 1 for _, during, after in counts), counts

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(with_changes(base, train={"batch_size": 8}), tmp_path / "single", manifest=manifest)
    finally:
        torch.set_num_threads(threads)

    ddp_rows = metric_rows(tmp_path / "ddp" / "metrics.csv")
    single_rows = metric_rows(tmp_path / "single" / "metrics.csv")
    assert len(ddp_rows) == len(single_rows) == 2
    for a, b in zip(ddp_rows, single_rows):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5, nan_ok=True), key
    assert single.best_metric is not None and single.best_metric > 0.8
    ddp_last = torch.load(Path(tmp_path / "ddp" / "checkpoints" / "last.pt"), weights_only=False)
    assert not any(k.startswith("module.") for k in ddp_last["model"])
    assert ddp_last["iteration"] == 6  # 12 cases per rank / 4 per batch x 2 epochs

