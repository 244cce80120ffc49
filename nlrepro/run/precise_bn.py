"""Precise BN: recompute BN running statistics exactly on N training batches before testing.

Running averages with momentum lag behind the weights they describe; VNL (``bn_helper.py``)
and PySlowFast therefore recompute them after training on 200 batches (``trainer.
precise_bn_batches``).  Definition used here (VNL's): for each BN layer, over all activations x
that reach it in the N batches (every sample, frame and pixel of a channel),

    running_mean = mean(x),   running_var = var(x)  (unbiased, over the concatenated x),

i.e. exactly ``torch.var_mean`` of the concatenation — not fvcore's average of per-batch
variances, which misses the spread of the batch means.  Batches are normalised with their own
statistics while we measure (BN layers in train mode, as during training); every other module
is in eval mode (no dropout).  Each batch's per-channel mean and variance are merged into
float64 totals with Chan's parallel update, and the totals are summed over ranks when
``torch.distributed`` runs, so every rank tests with the same statistics.  Only
``running_mean`` / ``running_var`` change: parameters, ``num_batches_tracked``, momentum and
train/eval flags are restored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from nlrepro.run.progress import every_s

log = logging.getLogger(__name__)

_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class _Moments:
    """Per-channel count, mean and M2 = Σ (x − mean)² of everything seen so far (float64)."""

    n: float = 0.0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        # One batch in its own dtype (no float64 copy of a large activation), then combined.
        dims = [d for d in range(x.dim()) if d != 1]
        var_b, mean_b = torch.var_mean(x.detach(), dim=dims, correction=0)
        nb = x.numel() // x.shape[1]
        mean_b, m2_b = mean_b.double(), var_b.double() * nb
        if self.mean is None:
            self.n, self.mean, self.m2 = float(nb), mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * nb / n)
        self.n = n


def bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """BN layers that keep running statistics (frozen BN layers have none)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None]


def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int) -> int:
    """Set every BN's running mean/var to the exact statistics of ``num_batches`` batches.

    ``batches`` yields model inputs (clips on the model's device); iteration stops after
    ``num_batches``.  Returns the number of batches used (fewer when ``batches`` runs out;
    ``ValueError`` when it yields none).  A model without BN layers is left alone (returns 0).
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    layers = bn_layers(model)
    if not layers:
        return 0
    moments = {name: _Moments() for name, _ in layers}
    flags = {m: m.training for m in model.modules()}
    tracked = {name: bn.num_batches_tracked.clone() for name, bn in layers
               if bn.num_batches_tracked is not None}
    hooks = [bn.register_forward_pre_hook(_collector(moments[name])) for name, bn in layers]
    used = 0
    t0 = last = time.time()
    log.info("precise BN: %d batches", num_batches)
    try:
        model.eval()
        for _, bn in layers:
            bn.train()
        with torch.no_grad():
            for batch in batches:
                if used >= num_batches:
                    break
                if not isinstance(batch, torch.Tensor):
                    raise TypeError(f"batches must yield tensors (model inputs), got "
                                    f"{type(batch).__name__}")
                model(batch)
                used += 1
                if time.time() - last >= every_s():
                    last = time.time()
                    log.info("precise BN batch %d/%d, %.1fs", used, num_batches, last - t0)
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags.items():
            m.train(flag)
        for name, bn in layers:
            if name in tracked:
                bn.num_batches_tracked.copy_(tracked[name])
    if used == 0:
        raise ValueError("update_bn_stats: the batch iterable yielded no batches")
    if used < num_batches:
        log.warning("precise BN: only %d of %d batches available", used, num_batches)
    log.info("precise BN done: %d batches in %.1fs", used, time.time() - t0)
    _sync(moments)
    for name, bn in layers:
        mo = moments[name]
        if mo.mean is None:  # the layer was never reached (an unused branch): keep its stats
            continue
        with torch.no_grad():
            bn.running_mean.copy_(mo.mean.to(bn.running_mean.dtype))
            bn.running_var.copy_((mo.m2 / max(mo.n - 1.0, 1.0)).to(bn.running_var.dtype))
    return used


def _collector(moments: _Moments):
    def hook(module: nn.Module, args: tuple) -> None:
        moments.add(args[0])
    return hook


def _sync(moments: dict[str, _Moments]) -> None:
    """Sum the moments over ranks (DDP testing must use one model on every rank)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for mo in moments.values():
        if mo.mean is None:  # pragma: no cover - all ranks run the same network
            continue
        # (n, Σx, Σ(x−μ_r)² + n μ_r²) are additive over ranks; recombine afterwards.
        n = torch.full_like(mo.mean, mo.n)
        packed = torch.stack([n, mo.mean * n, mo.m2 + n * mo.mean ** 2])
        if dist.get_backend() == "nccl" and not packed.is_cuda:  # pragma: no cover
            packed = packed.cuda()
        dist.all_reduce(packed)
        packed = packed.to(mo.mean.device)
        n_all, s1, s2 = packed
        mo.mean = s1 / n_all
        mo.m2 = s2 - n_all * mo.mean ** 2
        mo.n = float(n_all[0])
