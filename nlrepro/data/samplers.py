"""Samplers that split a dataset over DDP ranks the way the results need.

Both derive from ``DistributedSampler`` so that Lightning uses them as they are instead of
wrapping them in its own padding ``DistributedSampler`` (it only replaces samplers that are
not one).  With one process they are plain samplers.

- :class:`EpochRandomSampler` (training): one permutation per ``(seed, epoch)``, dealt to the
  ranks round-robin.  Rank ``r``'s k-th batch of ``b/W`` clips is then the ``r``-th share of
  the 1-process run's k-th batch of ``b`` clips, so W processes at ``b/W`` see the same global
  batches as one process at ``b``; and a resumed run draws the same order again.
- :class:`ShardSampler` (validation, test): contiguous blocks, no padding, so every view is
  evaluated exactly once (a padding sampler repeats views and biases the video scores).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class EpochRandomSampler(DistributedSampler):
    """A permutation drawn from ``(seed, epoch)``; rank ``r`` of ``W`` takes ``perm[r::W]``.

    Lightning calls ``set_epoch`` at each epoch start; without it, each pass moves to the
    next epoch.  The permutation is padded (wrapped) to a multiple of ``W`` so that every
    rank runs the same number of steps, as DDP requires.
    """

    def __init__(self, data_source: Sized, seed: int, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        key = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(key))).tolist()
        while len(perm) < self.total_size:
            perm += perm[: self.total_size - len(perm)]
        self.epoch += 1
        return iter(perm[self.rank:self.total_size:self.num_replicas])


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes the contiguous block ``[n·r/W, n·(r+1)/W)``, unpadded."""

    def __init__(self, data_source: Sized, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(data_source)
        self.start, self.stop = n * rank // num_replicas, n * (rank + 1) // num_replicas
        self.num_samples = self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
