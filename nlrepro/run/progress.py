"""Progress output: Lightning's bar in a terminal, plain periodic lines otherwise (CI, SLURM).

The plain lines cover every phase of a run: training epochs, precise BN (``precise_bn``) and
the multi-view test, so a SLURM log shows the 30-view test advancing.  They come every
``NLREPRO_PROGRESS_EVERY_S`` seconds (default 60) inside a phase, and at its start and end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger("nlrepro.progress")


def every_s() -> float:
    """Seconds between two progress lines inside a phase (``NLREPRO_PROGRESS_EVERY_S``)."""
    return float(os.environ.get("NLREPRO_PROGRESS_EVERY_S", 60.0))


class PlainProgress(Callback):
    """One log line per epoch (and every ``every_s`` seconds inside long epochs); the test's
    start, its batches every ``every_s`` seconds, and its end."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._t0 = self._last = 0.0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._last = time.time()
        log.info("test: %d batches", self._test_batches(trainer))

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                          outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        now = time.time()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("test batch %d/%d, %.1fs", batch_idx + 1, self._test_batches(trainer),
                     now - self._t0)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info("test done: %d batches in %.1fs", self._test_batches(trainer),
                 time.time() - self._t0)

    @staticmethod
    def _test_batches(trainer: L.Trainer) -> int:
        n = trainer.num_test_batches
        return int(sum(n)) if isinstance(n, (list, tuple)) else int(n)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._last = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.time()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("epoch %d batch %d/%s loss %.4f", trainer.current_epoch, batch_idx + 1,
                     trainer.num_training_batches, float(outputs["loss"]))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        parts = [f"{k} {float(v):.4f}" for k, v in sorted(m.items())
                 if k.startswith(("train/", "val/")) and v.numel() == 1]
        log.info("epoch %d/%d done in %.1fs: %s", trainer.current_epoch + 1, trainer.max_epochs,
                 time.time() - self._t0, ", ".join(parts))


def progress_callback() -> Callback:
    return TQDMProgressBar() if sys.stderr.isatty() else PlainProgress(every_s())
