"""ResNet-50/101 video backbones of the paper's Table 1: C2D, I3D 3×1×1 and I3D 3×3×3.

One class builds all three (and the narrow proxy variant through ``ModelConfig.width`` and
``stage_blocks``), following the official release (VNL ``resnet_video_org.py``):

* Stem: conv1 (t×k×k, stride (stem_temporal_stride, s, s), pad (t//2, k//2, k//2)) → BN → ReLU
  → max-pool (2,3,3) stride (2,2,2) pad 0 (``stem_pool``).  t = 1 for C2D and 5 for both I3D
  variants (the paper's Table 1 I3D stem; for 3×3×3 nothing is released, we keep 5×7×7).
* res2..res5 bottlenecks (inner width w, 2w, 4w, 8w; output 4× inner), stride on the 3×3 conv,
  projection shortcut (1×1×1 conv + BN) where the shape changes.  A temporal max-pool (2,1,1)
  follows res2 (``pool2``).  In C2D every conv after the stem is 1×k×k: time is mixed only by
  the pools (and the NL blocks).
* I3D: "one temporal kernel every 2 residual blocks", in VNL's blocks: res2 all, res3/res4 the
  even indices (R50 res3 0,2; res4 0,2,4; R101 res4 0,2,..,22), res5 the odd ones (block 1).
  The same parity rule is applied to any stage size (a 1-block res5 therefore has none).
  ``i3d_3x1x1`` makes the first 1×1×1 conv of those blocks 3×1×1; ``i3d_3x3x3`` makes their
  1×3×3 conv 3×3×3 (temporal padding 1 in both cases).
* Head: global average pool → dropout → FC.  In eval mode on inputs larger than the training
  crop the FC is applied at every position as a 1×1×1 conv and the logits are averaged, which
  equals FC(average) exactly (the FC is linear).  VNL/PySlowFast average per-position
  *softmax* instead; we return logits so that views are combined in one place (the test loop).

Init: convs He-normal (fan_out, = Caffe2 MSRAFill), BN γ=1/β=0 (VNL ``BN_INIT_GAMMA = 1.0``;
``zero_init_residual=True`` zeroes the γ of each block's last BN instead), FC N(0, 0.01²) with
zero bias (VNL ``FC_INIT_STD``).  Module names follow torchvision inside the blocks
(``res3.0.conv1``, ``res3.0.downsample.0``) so that ImageNet inflation maps names one to one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlrepro.choices import ARCHS, STAGES
from nlrepro.errors import ConfigError
from nlrepro.models.frozen_bn import freeze_bn
from nlrepro.models.inflate import load_pretrained_2d
from nlrepro.models.non_local import NonLocalBlock
from nlrepro.models.placement import compile_placement, stage_blocks_of, temporal_sizes
STEM_TEMPORAL_KERNEL = {"c2d": 1, "i3d_3x1x1": 5, "i3d_3x3x3": 5}


def temporal_blocks(stage: str, n: int) -> list[bool]:
    """Which blocks of a stage of ``n`` get a temporal kernel in I3D (VNL's pattern)."""
    if stage == "res2":
        return [True] * n
    if stage == "res5":
        return [i % 2 == 1 for i in range(n)]
    return [i % 2 == 0 for i in range(n)]


class Bottleneck(nn.Module):
    """1×1×1 → 1×3×3 (stride) → 1×1×1 with a residual; ``t1``/``t2`` are the temporal kernels."""

    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int = 1,
                 t1: int = 1, t2: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, inner, (t1, 1, 1), padding=(t1 // 2, 0, 0),
                               bias=False)
        self.bn1 = nn.BatchNorm3d(inner)
        self.conv2 = nn.Conv3d(inner, inner, (t2, 3, 3), stride=(1, stride, stride),
                               padding=(t2 // 2, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Stage(nn.Module):
    """Residual blocks ``"0".."n-1"`` with NL blocks ``"nl<i>"`` after block ``i``."""

    def __init__(self, blocks: list[Bottleneck], nonlocal_: dict[int, nn.Module]) -> None:
        super().__init__()
        self.num_blocks = len(blocks)
        for i, block in enumerate(blocks):
            self.add_module(str(i), block)
        for i, block in nonlocal_.items():
            self.add_module(f"nl{i}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_blocks):
            x = getattr(self, str(i))(x)
            nl = getattr(self, f"nl{i}", None)
            if nl is not None:
                x = nl(x)
        return x


class ResNet3D(nn.Module):
    """C2D / I3D 3×1×1 / I3D 3×3×3 ResNet; ``(B, 3, T, H, W)`` → logits ``(B, classes)``."""

    def __init__(self, arch: str = "c2d", stage_blocks: dict[str, int] | None = None,
                 width: int = 64, num_classes: int = 400, stem_kernel: int = 7,
                 stem_stride: int = 2, stem_temporal_stride: int = 2, stem_pool: bool = True,
                 pool2: bool = True, dropout: float = 0.5,
                 placement: dict[str, list[int]] | None = None,
                 nonlocal_factory: Any = None, train_crop: int | None = None,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model.arch: {arch!r} is not valid; choose one of {list(ARCHS)}")
        stage_blocks = stage_blocks or dict(zip(STAGES, (3, 4, 6, 3)))
        placement = placement or {}
        self.arch = arch
        self.train_crop = train_crop
        self.stem_temporal_stride, self.stem_pool, self.use_pool2 = (
            stem_temporal_stride, stem_pool, pool2)
        t = STEM_TEMPORAL_KERNEL[arch]
        self.conv1 = nn.Conv3d(3, width, (t, stem_kernel, stem_kernel),
                               stride=(stem_temporal_stride, stem_stride, stem_stride),
                               padding=(t // 2, stem_kernel // 2, stem_kernel // 2), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool3d((2, 3, 3), stride=(2, 2, 2)) if stem_pool else nn.Identity()
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)) if pool2 else nn.Identity()
        in_ch = width
        for s, stage in enumerate(STAGES):
            inner = width * 2 ** s
            temporal = temporal_blocks(stage, stage_blocks[stage])
            blocks = []
            for i in range(stage_blocks[stage]):
                t3 = arch != "c2d" and temporal[i]
                blocks.append(Bottleneck(
                    in_ch, inner, 4 * inner, stride=2 if (i == 0 and s > 0) else 1,
                    t1=3 if t3 and arch == "i3d_3x1x1" else 1,
                    t2=3 if t3 and arch == "i3d_3x3x3" else 1))
                in_ch = 4 * inner
            nl = {i: nonlocal_factory(stage, in_ch) for i in placement.get(stage, [])}
            self.add_module(stage, Stage(blocks, nl))
        self.feature_channels = in_ch
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        nl = {id(m) for b in self.nonlocal_blocks().values() for m in b.modules()}
        for m in self.modules():
            if id(m) in nl:  # the NL block initialises itself (zero-γ W_z BN)
                continue
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def stages(self) -> dict[str, Stage]:
        return {s: getattr(self, s) for s in STAGES}

    def nonlocal_blocks(self) -> dict[str, nn.Module]:
        """``{"res3.1": block, ...}``: NL blocks keyed by the residual block they follow."""
        return {f"{s}.{name[2:]}": m for s, stage in self.stages().items()
                for name, m in stage.named_children() if name.startswith("nl")}

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named feature map (conv1, pool1, res2, pool2, res3, res4, res5)."""
        out = {"conv1": self.relu(self.bn1(self.conv1(x)))}
        out["pool1"] = self.pool1(out["conv1"])
        out["res2"] = self.res2(out["pool1"])
        out["pool2"] = self.pool2(out["res2"])
        out["res3"] = self.res3(out["pool2"])
        out["res4"] = self.res4(out["res3"])
        out["res5"] = self.res5(out["res4"])
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.res2(x))
        return self.res5(self.res4(self.res3(x)))

    def dense_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The FC at every position, as a 1×1×1 conv: ``(B, C, T, H, W)`` → ``(B, K, T, H, W)``."""
        weight = self.fc.weight[:, :, None, None, None]
        return F.conv3d(features, weight, self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        crop = self.train_crop
        if not self.training and crop is not None and max(x.shape[-2:]) > crop:
            return self.dense_logits(feats).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(feats.mean(dim=(2, 3, 4))))

    def temporal_sizes(self, frames: int) -> dict[str, int]:
        """Temporal length of every feature map for a ``frames``-frame clip."""
        return temporal_sizes(frames, self.stem_temporal_stride, self.stem_pool, self.use_pool2)


def _nonlocal_factory(nl_cfg: Any) -> Any:
    """A function (stage, channels) -> NonLocalBlock configured from ``model.nonlocal``."""
    def make(stage: str, channels: int) -> nn.Module:
        block = NonLocalBlock(channels, nl_cfg.instantiation, nl_cfg.scope, nl_cfg.subsample,
                              nl_cfg.scale, norm=nl_cfg.norm,
                              temporal_group=nl_cfg.temporal_groups.get(stage),
                              bn_init_gamma=nl_cfg.bn_init_gamma,
                              concat_offset=nl_cfg.concat_offset)
        block.fast = nl_cfg.fast
        return block
    return make


def build_model(model_cfg: Any, frames: int | None = None, crop: int | None = None,
                load_pretrained: bool = True) -> ResNet3D:
    """The network a ``ModelConfig`` describes; ImageNet-inflated when ``pretrained`` is set.

    ``frames`` (the clip length) is checked against the temporal pools and the NL temporal
    groups; ``crop`` (the training crop) switches eval inputs larger than it to the
    fully-convolutional head.  ``load_pretrained=False`` never touches weights files
    (``nlrepro info``, meta-device builds).
    """
    nl = model_cfg.nonlocal_
    sizes = stage_blocks_of(model_cfg)
    placement = compile_placement(nl.blocks, nl.stages, sizes, model_cfg.depth,
                                  fill=nl.fill_small_stages)
    if frames is not None:
        t = temporal_sizes(frames, model_cfg.stem_temporal_stride, model_cfg.stem_pool,
                            model_cfg.pool2)
        for stage, k in nl.temporal_groups.items():
            if stage in placement and t[stage] % k:
                raise ConfigError(f"model.nonlocal.temporal_groups: {stage}={k} does not divide "
                                 f"the {t[stage]} frames {stage} sees with data.frames={frames}; "
                                 f"valid groups: divisors of {t[stage]}")
    model = ResNet3D(
        arch=model_cfg.arch, stage_blocks=sizes, width=model_cfg.width,
        num_classes=model_cfg.num_classes, stem_kernel=model_cfg.stem_kernel,
        stem_stride=model_cfg.stem_stride, stem_temporal_stride=model_cfg.stem_temporal_stride,
        stem_pool=model_cfg.stem_pool, pool2=model_cfg.pool2, dropout=model_cfg.dropout,
        placement=placement, nonlocal_factory=_nonlocal_factory(nl) if placement else None,
        train_crop=crop)
    if load_pretrained and model_cfg.pretrained:
        load_pretrained_2d(model, model_cfg)
    if model_cfg.frozen_bn:  # after the weights: BN statistics are folded into the affine
        model = freeze_bn(model)
    return model
