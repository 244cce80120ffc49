"""``nlrepro info``: a model's parameter count, multiply-adds and NL placement, as JSON.

The model is built on PyTorch's ``meta`` device (shapes only, no memory, no weights loaded or
downloaded) and one forward pass of a ``(1, 3, T, crop, crop)`` clip runs under
``torch.utils.flop_counter.FlopCounterMode``.  That counter reports FLOPs = 2 × multiply-adds
for convolutions and matrix products; the paper (and the SlowFast paper's 282 G for NL I3D)
quote multiply-adds, so ``gflops`` = counted FLOPs / 2 / 1e9.  Only convs, matmuls and linear
layers are counted (BN, ReLU, pooling, softmax are not), as in the papers.  NL blocks are
counted on their plain N×M reference path (``fast=False``): the fast kernels compute the same
products.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from nlrepro.config import RunConfig, add_profile_argument, add_set_argument, load_config
from nlrepro.models.placement import R101_10_BLOCK_NOTE
from nlrepro.models.resnet3d import build_model


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (``FlopCounterMode`` FLOPs / 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def model_info(cfg: RunConfig, device: str | torch.device = "meta") -> dict[str, Any]:
    """Params, GMACs (``gflops``), input shape and NL positions of ``cfg``'s model."""
    m, d = cfg.model, cfg.data
    shape = (1, 3, d.frames, d.crop, d.crop)
    with torch.device(device):
        model = build_model(m, frames=d.frames, crop=d.crop, load_pretrained=False).eval()
        for block in model.nonlocal_blocks().values():
            block.fast = False
        macs = count_macs(model, torch.zeros(shape))
    nl = list(model.nonlocal_blocks())
    info: dict[str, Any] = {
        "arch": m.arch,
        "depth": m.depth,
        "stage_blocks": [model.stages()[s].num_blocks for s in model.stages()],
        "width": m.width,
        "num_classes": m.num_classes,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs,
        "gflops": macs / 1e9,
        "input_shape": list(shape),
        "nonlocal": nl,
        "nonlocal_count": len(nl),
    }
    if info["stage_blocks"] == [3, 4, 23, 3] and m.nonlocal_.blocks == 10:
        info["note"] = R101_10_BLOCK_NOTE
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_profile_argument(parser)
    add_set_argument(parser)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.profile, sets=args.sets)
    print(json.dumps(model_info(cfg), indent=2))
    return 0
