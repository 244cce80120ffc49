"""Synchronised BN on any backend: BN statistics of the global batch under DDP.

``trainer.sync_batchnorm`` makes W processes at batch b/W train as one process at batch b.
On GPUs Lightning converts BN to torch's ``SyncBatchNorm``, which refuses CPU tensors; on
CPUs (gloo) :class:`SyncBatchNorm3d` does the same job: per-channel Σx, Σx² and counts are
summed over ranks with the differentiable ``all_reduce`` (its backward sums the gradients of
every rank's loss, as the global batch's BN needs), then x is normalised with the global
mean and (biased) variance; running statistics take the unbiased one, as ``BatchNorm3d``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNorm3d(nn.BatchNorm3d):
    """``BatchNorm3d`` whose training statistics are pooled over all ranks (same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c, dims = x.shape[1], [0, 2, 3, 4]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)
                self.num_batches_tracked += 1
        shape = (1, c, 1, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def _convert(module: nn.Module, to: type[nn.BatchNorm3d]) -> nn.Module:
    """``module`` with every ``BatchNorm3d`` (exactly, or a subclass) re-created as ``to``,
    sharing its parameters and buffers."""
    if isinstance(module, nn.BatchNorm3d) and type(module) is not to:
        new = to(module.num_features, module.eps, module.momentum, module.affine,
                 module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert(child, to))
    return module


class GlooSyncBatchNorm(LayerSync):
    """Lightning plugin: BN -> :class:`SyncBatchNorm3d` for fitting, back to BN after."""

    def apply(self, model: nn.Module) -> nn.Module:
        return _convert(model, SyncBatchNorm3d)

    def revert(self, model: nn.Module) -> nn.Module:
        return _convert(model, nn.BatchNorm3d)


@contextmanager
def synced_bn(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """BN layers synchronised inside the block (precise BN after a sync-BN fit: each batch is
    normalised with the global batch's statistics, as in training), plain BN again after."""
    if not enabled:
        yield model
        return
    _convert(model, SyncBatchNorm3d)
    try:
        yield model
    finally:
        _convert(model, nn.BatchNorm3d)
