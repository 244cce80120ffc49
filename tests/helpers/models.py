"""Model helpers shared by tests."""

from __future__ import annotations

import torch
from torch import nn


def randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN affine and statistics (2D or 3D), so a wrong copy cannot pass by accident."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model
