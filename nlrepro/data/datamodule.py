"""``VideoDataModule``: the three loaders of a run, and how many videos each really used.

Batches (default collation of ``VideoDataset`` items):
- train: ``(clip float (B,C,T,H,W), label (B,), retries (B,))``
- val / test: ``(clip, label, video_idx, clip_idx, crop_idx, ok)``; ``ok`` is bool.
  val has one centre clip × centre crop per video; test has every view.

Failures are counted in the main process (``on_before_batch_transfer`` sees every batch,
whatever worker made it): distinct videos with ``ok=False`` per eval split, and the
``retries`` of training batches. ``failure_report()`` returns them for the run summary.
Under DDP each rank counts the batches it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from nlrepro.config import ConfigError, RunConfig
from nlrepro.data.annotations import (ClassIndex, list_labels, load_or_create_classes,
                                      read_exclusions, read_list)
from nlrepro.data.video import VideoDataset, worker_context

log = logging.getLogger(__name__)

MAX_EXAMPLES = 10


class EpochRandomSampler(RandomSampler):
    """A permutation drawn from ``(seed, epoch)``: the same order after a resume.

    Lightning calls ``set_epoch`` at each epoch start; without it, each pass moves to the
    next epoch. Under DDP Lightning swaps this sampler for a shuffling
    ``DistributedSampler`` (it is a ``RandomSampler``).
    """

    def __init__(self, data_source: Any, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        key = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(key))
        self.epoch += 1
        return super().__iter__()


class VideoDataModule(L.LightningDataModule):
    """Lists -> datasets -> loaders for ``cfg.data``.  It never writes videos: the caller
    makes sure they exist (``nlrepro.proxy.dataset.ensure_proxy_data`` for the proxy)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.root = Path(cfg.data.root)
        self.classes: ClassIndex | None = None
        self.datasets: dict[str, VideoDataset] = {}
        self._failed: dict[str, set[int]] = {"val": set(), "test": set()}
        self._train_retries = 0

    # ---- Lightning hooks ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if self.classes is None:
            self.classes = self._class_index()
        exclude = read_exclusions(self._path(d.exclude), self.root) if d.exclude else {}
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",)}.get(stage or "", ("train", "val", "test"))
        lists = {"train": d.train_list, "val": d.val_list, "test": d.test_list}
        for split in wanted:
            if split in self.datasets:
                continue
            records = read_list(self._path(lists[split]), d.list_format, self.root,
                                self.classes, d.separator)
            ds = VideoDataset(records, d, split, exclude)
            self.datasets[split] = ds
            log.info("%s: %d videos listed, %d excluded by %s", split, len(records),
                     ds.excluded, d.exclude)

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset("train")
        sampler = EpochRandomSampler(ds, self.cfg.seed)
        # Full batches only (a batch of 1 breaks BN), unless the split is smaller than one.
        return self._loader(ds, sampler=sampler, drop_last=len(ds) >= self.cfg.data.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if len(batch) == 3:
            self._train_retries += int(batch[2].sum())
        elif len(batch) == 6 and trainer is not None and not trainer.sanity_checking:
            split = "test" if trainer.testing else "val"
            video_idx, ok = batch[2], batch[5]
            self._failed[split].update(int(v) for v in video_idx[~ok.bool()])
        return batch

    # ---- reports -------------------------------------------------------------------------
    @property
    def num_test_videos(self) -> int:
        return self._dataset("test").num_videos

    def failure_report(self) -> dict[str, Any]:
        """How many videos each split listed, excluded, failed to decode and used."""
        out: dict[str, Any] = {}
        if "train" in self.datasets:
            ds = self.datasets["train"]
            out.update(train_videos=ds.num_videos, train_excluded=ds.excluded,
                       train_retries=self._train_retries)
        for split in ("val", "test"):
            if split not in self.datasets:
                continue
            ds, failed = self.datasets[split], sorted(self._failed[split])
            out.update({f"{split}_videos": ds.num_videos, f"{split}_excluded": ds.excluded,
                        f"{split}_failed": len(failed),
                        f"{split}_used": ds.num_videos - len(failed),
                        f"{split}_failed_examples": [str(ds.records[i].path)
                                                     for i in failed[:MAX_EXAMPLES]]})
        return out

    # ---- helpers -------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.root / name

    def _dataset(self, split: str) -> VideoDataset:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.datasets[split]

    def _class_index(self) -> ClassIndex:
        """The saved class index, or one built from the training list; must fit the model."""
        d, k = self.cfg.data, self.cfg.model.num_classes
        if d.class_index:
            classes = load_or_create_classes(self._path(d.class_index), self._path(d.train_list),
                                             d.list_format, d.separator, num_classes=k)
        else:
            classes = ClassIndex.from_labels(
                list_labels(self._path(d.train_list), d.list_format, d.separator), k)
        if len(classes) != k:
            raise ConfigError(f"model.num_classes: {k} does not match the {len(classes)} classes "
                              f"of the data ({d.class_index or d.train_list} under {self.root})")
        return classes

    def _loader(self, ds: VideoDataset, sampler: Any = None, drop_last: bool = False
                ) -> DataLoader:
        d = self.cfg.data
        return DataLoader(ds, batch_size=d.batch_size, sampler=sampler, shuffle=False,
                          drop_last=drop_last, num_workers=d.num_workers,
                          pin_memory=torch.cuda.is_available(),
                          persistent_workers=d.num_workers > 0,
                          multiprocessing_context=worker_context() if d.num_workers else None)
