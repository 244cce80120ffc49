"""The LightningModule: loss, optimiser, schedule, metrics and the multi-view test.

Clip-level and video-level accuracies never share a name: validation reports
single-clip accuracy (``val/top1_clip``); the test split reports the paper's
video-level accuracy (softmax averaged over all views of a video,
``test/top1_video``).  Both splits count a video that could not be decoded as wrong (its
views are zeros with ``ok=False``; scoring the zeros would give it a random chance of
being right, and every chance with k <= 5 classes in top-5), and both keep it in the
denominator, as the paper does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from nlrepro.choices import PROXY_FRAMES
from nlrepro.config import (ConfigError, OptimConfig, RunConfig, from_dict, holds_f,
                            to_dict)
from nlrepro.models.frozen_bn import FrozenBN3d
from nlrepro.models.non_local import NonLocalBlock
from nlrepro.models.resnet3d import build_model

_NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _is_norm(module: nn.Module) -> bool:
    # Frozen BN layers (128-frame recipe) are affine BN: no weight decay either.
    return isinstance(module, (*_NORM_TYPES, FrozenBN3d))


def make_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """SGD (the paper's) or AdamW (the proxy's) over :func:`param_groups`."""
    groups = param_groups(model, o.weight_decay, o.bn_weight_decay)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.AdamW(groups, lr=o.lr, eps=o.eps)


def hold_steps(cfg: RunConfig, steps_per_epoch: float) -> int:
    """Optimizer steps for which f's parameters are held (``optim.embed_hold_epochs``); 0 where
    :func:`holds_f` says the hold does not apply."""
    return int(round(cfg.optim.embed_hold_epochs * steps_per_epoch)) if holds_f(cfg) else 0


def param_groups(model: nn.Module, weight_decay: float, bn_weight_decay: float) -> list[dict]:
    """Split parameters: BN (and frozen-BN) parameters get ``bn_weight_decay`` (paper: 0)."""
    norm, other = [], []
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        (norm if _is_norm(module) else other).extend(params)
    groups = [{"params": other, "weight_decay": weight_decay}]
    if norm:
        groups.append({"params": norm, "weight_decay": bn_weight_decay})
    return groups


def lr_factor(step: int, total: int, warmup: int, schedule: str,
              milestones: list[float], gamma: float) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then step or cosine."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        return gamma ** sum(step >= m * total for m in milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

log = logging.getLogger(__name__)


def _per_video(scores: torch.Tensor, views: torch.Tensor, failed: torch.Tensor,
               labels: torch.Tensor) -> dict[str, list]:
    """One row per listed video: views tested, views failed, predicted class and the
    view-averaged probability of the true class (for error analysis and rank checks)."""
    seen = (labels >= 0).nonzero().flatten()
    probs = scores[seen] / views[seen].clamp(min=1)[:, None]
    lab = labels[seen]
    return {"video_idx": seen.tolist(), "label": lab.tolist(), "views": views[seen].tolist(),
            "failed": failed[seen].tolist(), "top1": probs.argmax(1).tolist(),
            "p_label": probs.gather(1, lab[:, None]).flatten().tolist()}


def topk_hits(logits: torch.Tensor, label: torch.Tensor, k: int, ok: torch.Tensor
              ) -> torch.Tensor:
    """1.0 where the label is among the top-``k`` logits and the clip was readable, else 0.0."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return ((top == label[:, None]).any(dim=1) & ok).float()


class VideoClassifier(L.LightningModule):
    """ResNet3D (+ non-local blocks) trained with cross-entropy on clips."""

    def __init__(self, config: dict[str, Any], load_pretrained: bool = True,
                 pretrained_path: str | Path | None = None) -> None:
        """``load_pretrained=False`` when a checkpoint will overwrite the weights (resume,
        init_from, evaluation).  A ``proxy-frames`` model needs ``pretrained_path``, the file
        ``nlrepro.proxy.pretrain.frames_weights`` returns: building never trains."""
        super().__init__()
        # Plain data in the checkpoint (loadable with weights_only=True).
        self.save_hyperparameters({"config": config})
        self.cfg: RunConfig = from_dict(config)
        model_cfg = self.cfg.model
        if load_pretrained and model_cfg.pretrained == PROXY_FRAMES:
            if pretrained_path is None:
                raise ConfigError("model.pretrained: 'proxy-frames' needs the frame pre-trained "
                                  "weights: pass pretrained_path="
                                  "nlrepro.proxy.pretrain.frames_weights(cfg)")
            model_cfg = dataclasses.replace(model_cfg, pretrained=str(pretrained_path))
        self.model = build_model(model_cfg, frames=self.cfg.data.frames,
                                 crop=self.cfg.data.crop, load_pretrained=load_pretrained)
        if self.cfg.trainer.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        k = self.cfg.model.num_classes
        # average="micro": the fraction of clips/videos right (torchmetrics defaults to macro).
        self.train_top1 = MulticlassAccuracy(num_classes=k, top_k=1, average="micro")
        # Validation: the fraction of clips right, unreadable clips counted wrong.
        self.val_top1, self.val_top5 = MeanMetric(), MeanMetric()
        self.test_top1 = MulticlassAccuracy(num_classes=k, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=k, top_k=min(5, k), average="micro")
        self.train_retries = 0
        self.hold_steps = 0  # optim.embed_hold_epochs in steps (configure_optimizers)
        self.test_report: dict[str, float] = {}
        self.test_videos: dict[str, list] = {}

    @classmethod
    def from_config(cls, cfg: RunConfig, load_pretrained: bool = True,
                    pretrained_path: str | Path | None = None) -> "VideoClassifier":
        return cls(to_dict(cfg), load_pretrained=load_pretrained, pretrained_path=pretrained_path)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if self.cfg.trainer.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        return self.model(clip)

    # ---- training / validation ------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        clip, label, retries = batch[0], batch[1], batch[2]
        logits = self(clip)
        loss = F.cross_entropy(logits, label)
        self.train_retries += int(retries.sum())
        self.train_top1(logits, label)
        # The mean over ranks: under DDP the loss of the global batch, as with one process.
        self.log("train/loss", loss, prog_bar=True, batch_size=len(label), sync_dist=True)
        self.log("train/top1_clip", self.train_top1, on_step=False, on_epoch=True,
                 batch_size=len(label))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        clip, label, ok = batch[0], batch[1], batch[5].bool()
        logits = self(clip)
        if ok.any():  # the loss of a zero clip says nothing about the model
            self.log("val/loss", F.cross_entropy(logits[ok], label[ok]),
                     batch_size=int(ok.sum()), sync_dist=True)
        self.val_top1.update(topk_hits(logits, label, 1, ok))
        self.val_top5.update(topk_hits(logits, label, 5, ok))
        self.log("val/top1_clip", self.val_top1, prog_bar=True, batch_size=len(label))
        self.log("val/top5_clip", self.val_top5, batch_size=len(label))

    # ---- multi-view test ----------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        n = self._num_test_videos()
        k = self.cfg.model.num_classes
        self._scores = torch.zeros(n, k, device=self.device, dtype=torch.float64)
        self._views = torch.zeros(n, device=self.device, dtype=torch.long)
        self._failed = torch.zeros(n, device=self.device, dtype=torch.long)
        self._labels = torch.full((n,), -1, device=self.device, dtype=torch.long)

    def _num_test_videos(self) -> int:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "num_test_videos"):
            raise RuntimeError("the multi-view test needs a datamodule with num_test_videos")
        return int(dm.num_test_videos)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        clip, label, video_idx, ok = batch[0], batch[1], batch[2], batch[5]
        probs = torch.softmax(self(clip).double(), dim=1)
        ok = ok.bool()
        self._scores.index_add_(0, video_idx[ok], probs[ok])
        self._views.index_add_(0, video_idx, ok.long())
        self._failed.index_add_(0, video_idx, (~ok).long())
        self._labels[video_idx] = label

    def on_test_epoch_end(self) -> None:
        scores, views, failed, labels = self._scores, self._views, self._failed, self._labels
        if self.trainer.world_size > 1:  # each rank saw a subset of the views: sum them
            scores, views, failed = (self.all_gather(t).sum(0) for t in (scores, views, failed))
            labels = self.all_gather(labels).max(0).values
        self._check_views_counted(int(views.sum() + failed.sum()))
        seen = labels >= 0
        # A video with any undecodable view is reported failed and counted wrong.
        usable = seen & (failed == 0) & (views > 0)
        n_total, n_used = int(seen.sum()), int(usable.sum())
        if n_used:
            probs = (scores[usable] / views[usable, None]).float()
            top1 = float(self.test_top1(probs, labels[usable])) * n_used / n_total
            top5 = float(self.test_top5(probs, labels[usable])) * n_used / n_total
        else:
            top1 = top5 = 0.0
        self.test_report = {"test/top1_video": 100.0 * top1, "test/top5_video": 100.0 * top5,
                            "test/videos": n_total, "test/videos_failed": n_total - n_used,
                            "test/views_per_video": float(views[usable].float().mean())
                            if n_used else 0.0, "test/views": int(views.sum())}
        self.test_videos = _per_video(scores, views, failed, labels)
        for key, value in self.test_report.items():
            self.log(key, float(value), rank_zero_only=True)

    def _check_views_counted(self, counted: int) -> None:
        """Every view once: a padding sampler (DDP) would count some twice, a lost tail none."""
        expected = int(getattr(self.trainer.datamodule, "num_test_views", counted))
        limit = self.trainer.limit_test_batches  # an int is a number of batches
        limited = not (isinstance(limit, float) and limit == 1.0)
        if counted > expected or (counted < expected and not limited):
            raise RuntimeError(f"multi-view test: {counted} views were tested, the test split "
                               f"has {expected}; each must be tested exactly once")

    # ---- optimisation -------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        opt = make_optimizer(self.model, o)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(round(o.warmup_epochs * steps_per_epoch))
        self.hold_steps = hold_steps(self.cfg, steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, warmup, o.schedule, o.milestones, o.gamma))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hold f's parameters for the first ``hold_steps`` steps (``optim.embed_hold_epochs``):
        a parameter without a gradient is skipped by the optimizer, weight decay included.
        Counted on ``global_step``, so a resumed run holds exactly the same steps."""
        if self.global_step < self.hold_steps:
            for block in self.model.modules():
                if isinstance(block, NonLocalBlock):
                    for p in block.affinity_parameters():
                        p.grad = None

    # ---- exact resume: each epoch's randomness derives from (seed, epoch, rank) ---------
    def on_train_epoch_start(self) -> None:
        """Re-seed every RNG from (seed, epoch): an epoch's augmentation and worker seeds
        then depend on nothing before it, so a run resumed from an epoch-end checkpoint
        replays exactly what the uninterrupted run did (Lightning itself draws from the
        global RNG between a checkpoint and the next epoch, differently on a resume)."""
        ss = np.random.SeedSequence([self.cfg.seed, self.current_epoch, self.global_rank])
        torch.manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))
        np.random.seed(ss.generate_state(4))
        random.seed(int(ss.generate_state(1)[0]))

    # Checkpoints are taken at epoch ends only (run/train.py), and the next epoch re-seeds, so
    # no RNG state needs to travel in them.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_retries"] = self.train_retries

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_retries = int(checkpoint.get("train_retries", 0))
        # One line per rank: a requeued multi-task job shows every rank resuming the same file.
        trainer = self._trainer
        if trainer is not None:
            log.info("rank %d of %d resumes from %s at epoch %d, step %d", trainer.global_rank,
                     trainer.world_size, trainer.ckpt_path, checkpoint.get("epoch", -1),
                     checkpoint.get("global_step", -1))
