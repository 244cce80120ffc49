"""Frozen BatchNorm for the 128-frame fine-tuning of Table 2g.

With 128-frame clips only 2 clips fit on a GPU, too few for batch statistics, so the official
release (VNL ``modify_caffe2_ftvideo.py`` → ``AffineNd``) folds every BN of the 32-frame model
into a per-channel affine layer and keeps training that:

    y = scale · x + bias,   scale = γ / √(var + ε),   bias = β − μ · scale.

``scale`` and ``bias`` stay trainable (the normalisation statistics are what is frozen); they
are stored as ``weight`` / ``bias`` and :class:`FrozenBN3d` is what the optimiser recognises to
put them in the no-weight-decay group (``nlrepro.run.module.param_groups``), like BN parameters.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

class FrozenBN3d(nn.Module):
    """Per-channel affine ``y = weight · x + bias`` on ``(B, C, T, H, W)``; a folded BN."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps  # the folded BN's ε, to fold BN checkpoints the same way later
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    @classmethod
    def from_bn(cls, bn: nn.modules.batchnorm._BatchNorm) -> "FrozenBN3d":
        """Fold ``bn``'s running statistics and affine parameters (same device and dtype)."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"cannot freeze {bn}: it tracks no running statistics "
                             "(track_running_stats=False)")
        gamma = bn.weight if bn.affine else None
        beta = bn.bias if bn.affine else None
        scale, shift = fold(bn.running_mean, bn.running_var, bn.eps, gamma, beta)
        frozen = cls(bn.num_features, bn.eps).to(device=scale.device, dtype=scale.dtype)
        with torch.no_grad():
            frozen.weight.copy_(scale)
            frozen.bias.copy_(shift)
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.num_features:
            raise ValueError(f"FrozenBN3d({self.num_features}) expects (B, {self.num_features}, "
                             f"T, H, W), got {tuple(x.shape)}")
        # Broadcasting keeps x's memory format (channels_last_3d stays channels_last_3d).
        shape = (1, -1, 1, 1, 1)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def fold(mean: torch.Tensor, var: torch.Tensor, eps: float, gamma: torch.Tensor | None = None,
         beta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` of the affine map equal to BN in eval mode."""
    with torch.no_grad():
        scale = torch.rsqrt(var + eps)
        if gamma is not None:
            scale = scale * gamma
        shift = -mean * scale
        if beta is not None:
            shift = shift + beta
    return scale.detach().clone(), shift.detach().clone()


def freeze_bn(model: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm3d`` of ``model`` (in place) by its :class:`FrozenBN3d`."""
    if isinstance(model, nn.BatchNorm3d):
        return FrozenBN3d.from_bn(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm3d):
            setattr(model, name, FrozenBN3d.from_bn(child))
        else:
            freeze_bn(child)
    return model


def pop_folded_bn(state: dict[str, Any], prefix: str, eps: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the BN entries under ``prefix`` (``running_mean``, ``running_var``,
    ``num_batches_tracked``, ``weight``, ``bias``) from ``state`` and return the ``fold``ed
    ``(scale, shift)`` they amount to."""
    mean, var = state.pop(f"{prefix}running_mean"), state.pop(f"{prefix}running_var")
    state.pop(f"{prefix}num_batches_tracked", None)
    return fold(mean, var, eps, state.pop(f"{prefix}weight", None),
                state.pop(f"{prefix}bias", None))


def fold_bn_state_dict(state: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Convert the BN entries of a (non-frozen) checkpoint to ``model``'s frozen layers.

    Table 2g starts from the 32-frame model, whose checkpoint holds γ, β, μ, σ² for each BN;
    loaded as they are, γ and β would land in ``scale`` / ``bias`` unfolded.  For every
    :class:`FrozenBN3d` of ``model`` whose BN statistics are in ``state``, the four entries are
    replaced by the folded ``weight`` / ``bias`` (with the layer's ε); other entries pass
    through.
    """
    out = dict(state)
    for name, module in model.named_modules():
        if not isinstance(module, FrozenBN3d):
            continue
        p = f"{name}." if name else ""
        if f"{p}running_mean" not in out or f"{p}running_var" not in out:
            continue
        out[f"{p}weight"], out[f"{p}bias"] = pop_folded_bn(out, p, module.eps)
    return out

