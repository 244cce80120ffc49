"""Spatial transforms of a clip (paper Sec. 4.1), on torchvision v2 video tensors.

Input: a decoded clip, ``uint8 (T, H, W, C)``. Output: ``float32 (C, T, H, W)``,
normalised with ``(x / 255 - mean) / std``. The clip is handed to torchvision as a
``tv_tensors.Video`` ``(T, C, H, W)``: v2 transforms draw their random parameters once
per call, so the scale, the crop and the flip are the same for every frame.

- train: shorter side to an integer drawn uniformly from ``train_scale = [min, max]``
  (both ends included), a random ``crop``² crop, horizontal flip with p = 0.5.
- eval: shorter side to ``scale``, then crop ``k`` of ``num_crops`` squares of ``crop``²
  placed evenly along the longer side and centred on the shorter one (3 crops:
  left/centre/right, or top/centre/bottom for portrait video; 1 crop: centre).

Resizing and cropping run on uint8 (the native fast path) and only the final crop is
converted to float.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from nlrepro.config import DataConfig


def evenly_spaced(delta: int, count: int) -> list[int]:
    """``count`` integer offsets spread evenly over ``[0, delta]``; one offset = the centre.

    Used for both the test clips along time and the test crops along space (PySlowFast's
    ``uniform_crop`` and offset sampling do the same).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    delta = max(0, delta)
    if count == 1:
        return [delta // 2]
    return [delta * k // (count - 1) for k in range(count)]


def to_video(frames: torch.Tensor) -> tv_tensors.Video:
    """``uint8 (T, H, W, C)`` -> ``Video (T, C, H, W)`` (a view, no copy)."""
    if frames.ndim != 4 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return tv_tensors.Video(frames.permute(0, 3, 1, 2))


def finish(video: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 ``(T, C, H, W)`` -> normalised float ``(C, T, H, W)``, contiguous."""
    t, c, h, w = video.shape
    out = torch.empty((c, t, h, w), dtype=torch.float32)
    out.copy_(video.as_subclass(torch.Tensor).permute(1, 0, 2, 3))  # one pass: layout + dtype
    return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


class RandomShortSideScale(v2.Transform):
    """Resize so the shorter side is a random integer in ``[min_size, max_size]`` (inclusive).

    ``v2.RandomResize`` draws from a half-open range and rejects ``min == max``.
    """

    def __init__(self, min_size: int, max_size: int, antialias: bool = True) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"scale range [{min_size}, {max_size}] must satisfy 0 < min <= max")
        self.min_size, self.max_size, self.antialias = min_size, max_size, antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"size": int(torch.randint(self.min_size, self.max_size + 1, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, [params["size"]], antialias=self.antialias)


class TrainTransform:
    """Scale jitter, random crop, optional flip, normalisation; one draw per clip."""

    def __init__(self, train_scale: list[int], crop: int, flip: bool = True,
                 mean: float = 0.45, std: float = 0.225) -> None:
        steps: list[v2.Transform] = [RandomShortSideScale(*train_scale), v2.RandomCrop(crop)]
        if flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        self.spatial = v2.Compose(steps)
        self.mean, self.std = mean, std

    @classmethod
    def from_config(cls, d: DataConfig) -> "TrainTransform":
        return cls(d.train_scale, d.crop, d.flip, d.mean, d.std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return finish(self.spatial(to_video(frames)), self.mean, self.std)


class EvalTransform:
    """Deterministic views: ``resize`` once per clip, then ``crop(video, k)`` per view."""

    def __init__(self, scale: int, crop: int, num_crops: int = 1,
                 mean: float = 0.45, std: float = 0.225) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        if crop > scale:
            raise ValueError(f"crop {crop} is larger than the scale {scale}")
        self.scale, self.size, self.num_crops = scale, crop, num_crops
        self.mean, self.std = mean, std

    def resize(self, frames: torch.Tensor) -> tv_tensors.Video:
        return F.resize(to_video(frames), [self.scale], antialias=True)

    def offsets(self, height: int, width: int, k: int) -> tuple[int, int]:
        """``(top, left)`` of crop ``k`` in a resized ``height × width`` frame."""
        if not 0 <= k < self.num_crops:
            raise IndexError(f"crop index {k} is outside 0..{self.num_crops - 1}")
        dy, dx = height - self.size, width - self.size
        if width >= height:
            return dy // 2, evenly_spaced(dx, self.num_crops)[k]
        return evenly_spaced(dy, self.num_crops)[k], dx // 2

    def crop(self, video: torch.Tensor, k: int) -> torch.Tensor:
        top, left = self.offsets(video.shape[-2], video.shape[-1], k)
        out = F.crop(video, top, left, self.size, self.size)
        return finish(out, self.mean, self.std)

    def __call__(self, frames: torch.Tensor, k: int = 0) -> torch.Tensor:
        return self.crop(self.resize(frames), k)
