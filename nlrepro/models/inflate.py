"""Inflate a 2D ImageNet ResNet (torchvision names) into any ResNet3D (paper Sec. 4.1, I3D).

A 2D kernel ``w`` of size k×k becomes ``t`` copies along time divided by ``t`` (t×k×k), so a
clip whose frames are all the same image gives the 2D network's response on every frame (away
from zero-padded temporal borders).  BN parameters and statistics are copied as they are; the
ImageNet classifier is not loaded (the video FC keeps its own init), nor are NL blocks, which
start as the identity.  Names map one to one: torchvision ``layer{k}.{i}.*`` is our
``res{k+1}.{i}.*``; ``conv1``/``bn1`` are the stem in both.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlrepro.choices import PROXY_FRAMES
from nlrepro.errors import ConfigError

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^layer([1-4])\.")
IMAGENET_DEPTHS = (50, 101)


@dataclass
class InflateReport:
    """What ``inflate_imagenet`` did: 3D keys filled, 2D keys unused, 3D keys left as built."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"inflated {len(self.loaded)} tensors; skipped from 2D: {self.skipped}; "
                f"kept as initialised: {len(self.missing)} ({_prefixes(self.missing)})")


def _prefixes(keys: list[str]) -> list[str]:
    return sorted({k.rsplit(".", 1)[0] for k in keys})[:8]


def map_key(key_2d: str) -> str | None:
    """torchvision key -> ResNet3D key; ``None`` for the classifier (not transferred)."""
    if key_2d.startswith("fc."):
        return None
    return _LAYER.sub(lambda m: f"res{int(m.group(1)) + 1}.", key_2d)


def inflate_tensor(w2d: torch.Tensor, shape_3d: torch.Size) -> torch.Tensor:
    """A 2D conv kernel ``(O, I, k, k)`` -> ``(O, I, t, k, k)``: t copies divided by t."""
    t = shape_3d[2]
    return w2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


@torch.no_grad()
def inflate_imagenet(model: nn.Module, state_dict_2d: dict[str, torch.Tensor]) -> InflateReport:
    """Copy (and inflate) ``state_dict_2d`` into ``model`` in place; returns what was done.

    Raises ``ValueError`` when a tensor's shape cannot match (e.g. a narrow proxy net).
    """
    own = model.state_dict()
    report = InflateReport()
    for key_2d, value in state_dict_2d.items():
        key = map_key(key_2d)
        if key is None or key not in own:
            report.skipped.append(key_2d)
            continue
        target = own[key]
        if value.dim() == 4 and target.dim() == 5:
            if value.shape != target.shape[:2] + target.shape[3:]:
                raise ValueError(f"cannot inflate {key_2d} {tuple(value.shape)} into {key} "
                                 f"{tuple(target.shape)}: the 2D and 3D networks differ "
                                 f"(ImageNet weights need width 64 and the R50/R101 stages)")
            value = inflate_tensor(value, target.shape)
        elif value.shape != target.shape:
            raise ValueError(f"cannot load {key_2d} {tuple(value.shape)} into {key} "
                             f"{tuple(target.shape)}: the 2D and 3D networks differ "
                             f"(ImageNet weights need width 64 and the R50/R101 stages)")
        target.copy_(value.to(target.dtype))
        report.loaded.append(key)
    done = set(report.loaded)
    report.missing = [k for k in own if k not in done]
    return report


def imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-50/101 (IMAGENET1K_V1, the classic 76%/77% recipe).

    Downloads into the torch hub cache on first use; never called by the tests.
    """
    import torchvision

    if depth not in IMAGENET_DEPTHS:
        raise ConfigError(f"model.depth: {depth} has no ImageNet weights; valid: "
                         f"{list(IMAGENET_DEPTHS)}")
    builder = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
    return builder(weights="IMAGENET1K_V1").state_dict()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A 2D ResNet state dict saved with ``torch.save`` (plain or under ``"state_dict"``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained: {str(path)!r} is neither 'imagenet' nor a file")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_pretrained_2d(model: nn.Module, model_cfg: Any) -> InflateReport:
    """Apply ``model_cfg.pretrained`` ("imagenet" or a file path) to ``model``."""
    source = model_cfg.pretrained
    if source == PROXY_FRAMES:
        raise ConfigError("model.pretrained: 'proxy-frames' is resolved from the whole run config "
                          "(nlrepro.proxy.pretrain.frames_weights); pass its file to "
                          "VideoClassifier(pretrained_path=...)")
    state = imagenet_state_dict(model_cfg.depth) if source == "imagenet" \
        else read_state_dict(source)
    report = inflate_imagenet(model, state)
    log.info("model.pretrained=%s: %s", source, report.summary())
    return report
