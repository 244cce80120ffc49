"""Failure counts of the run summary under DDP: every rank's, not rank 0's alone."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nlrepro.config import load_config
from nlrepro.data.datamodule import VideoDataModule


def _rank(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        dm = VideoDataModule(load_config("proxy"))
        dm._failed = {"val": {rank}, "test": {10 + rank, 20}}  # as counted in its own batches
        dm._train_retries = rank + 1
        torch.save(dm._all_ranks(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_failures_of_both_ranks_are_merged(tmp_path: Path) -> None:
    out = str(tmp_path / "merged")
    mp.start_processes(_rank, args=(f"file://{tmp_path / 'rendezvous'}", out), nprocs=2,
                       start_method="spawn")
    for rank in (0, 1):
        failed, retries = torch.load(f"{out}.{rank}", weights_only=False)
        assert failed == {"val": {0, 1}, "test": {10, 11, 20}} and retries == 3
