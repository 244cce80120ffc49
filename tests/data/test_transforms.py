"""Spatial transforms: same crop/flip for every frame, the intended test crops, normalisation.

Frames carry their own coordinates: channel 0 = x, channel 1 = y, channel 2 = t, so a
transformed clip says exactly which source pixels it holds.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as tnf
from torchvision.transforms.v2 import functional as F

from nlrepro.data.transforms import EvalTransform, RandomShortSideScale, TrainTransform, to_video

MEAN, STD = 0.45, 0.225


def coordinate_clip(t: int = 6, h: int = 48, w: int = 64) -> torch.Tensor:
    """uint8 (T, H, W, 3) with pixel (t, y, x) = (x, y, t)."""
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xx, yy, tt], dim=-1).to(torch.uint8)


def source_values(out: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: float (C, T, H, W) -> the uint8 values it came from."""
    return ((out * STD + MEAN) * 255).round()


def test_train_crop_and_flip_are_the_same_for_every_frame():
    torch.manual_seed(0)
    transform = TrainTransform([48, 48], 32, flip=True, mean=MEAN, std=STD)
    clip = coordinate_clip()
    lefts, tops, flips = set(), set(), []
    for _ in range(300):
        out = transform(clip)
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        v = source_values(out)
        x, y, t = v[0], v[1], v[2]
        assert torch.equal(x, x[:1].expand_as(x)) and torch.equal(y, y[:1].expand_as(y))
        assert torch.equal(t[:, 0, 0], torch.arange(6.0))  # frames keep their order
        row = x[0, 0]
        flipped = bool(row[0] > row[-1])
        step = -1.0 if flipped else 1.0
        assert torch.equal(torch.diff(row), torch.full((31,), step))  # a contiguous window
        assert torch.equal(y[0, :, 0], y[0, 0, 0] + torch.arange(32.0))
        lefts.add(int(row.min()))
        tops.add(int(y.min()))
        flips.append(flipped)
    assert lefts == set(range(0, 33)) and tops == set(range(0, 17))  # every offset reachable
    assert 0.4 < np.mean(flips) < 0.6


def test_no_flip_when_disabled():
    transform = TrainTransform([48, 48], 32, flip=False)
    for _ in range(50):
        row = source_values(transform(coordinate_clip()))[0, 0, 0]
        assert row[-1] > row[0]


def test_scale_jitter_draws_every_integer_of_the_range_inclusive():
    torch.manual_seed(0)
    scale = RandomShortSideScale(48, 52)
    video = to_video(coordinate_clip(2, 48, 64))
    sizes = {tuple(scale(video).shape[-2:]) for _ in range(200)}
    assert sizes == {(s, int(s * 64 / 48)) for s in range(48, 53)}  # torchvision truncates
    portrait = to_video(coordinate_clip(2, 64, 48))
    assert {scale(portrait).shape[-1] for _ in range(100)} == set(range(48, 53))
    assert RandomShortSideScale(32, 32)(to_video(coordinate_clip(2, 32, 32))).shape[-1] == 32
    with pytest.raises(ValueError, match=r"\[60, 50\]"):
        RandomShortSideScale(60, 50)


def test_train_output_matches_the_normalisation_formula():
    torch.manual_seed(3)
    clip = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    out = TrainTransform([40, 40], 40, flip=False, mean=MEAN, std=STD)(clip)
    expected = (clip.permute(3, 0, 1, 2).float() / 255 - MEAN) / STD
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("h, w, crops, offsets", [
    (48, 64, 3, [(0, 0), (0, 8), (0, 16)]),    # landscape: left, centre, right
    (64, 48, 3, [(0, 0), (8, 0), (16, 0)]),    # portrait: top, centre, bottom
    (48, 64, 1, [(0, 8)]),                     # one crop: the centre
    (48, 48, 3, [(0, 0), (0, 0), (0, 0)]),     # square: nothing to move
])
def test_test_crops_sit_evenly_along_the_longer_side(h, w, crops, offsets):
    transform = EvalTransform(48, 48, crops, MEAN, STD)
    clip = coordinate_clip(3, h, w)
    for k, (top, left) in enumerate(offsets):
        v = source_values(transform(clip, k))
        assert v.shape == (3, 3, 48, 48)
        assert torch.equal(v[0, :, 0, 0], torch.full((3,), float(left)))
        assert torch.equal(v[1, :, 0, 0], torch.full((3,), float(top)))
        assert torch.equal(v[0], v[0, :1].expand_as(v[0]))


def test_test_views_resize_the_shorter_side_then_crop():
    clip = torch.randint(0, 256, (2, 96, 136, 3), dtype=torch.uint8)
    transform = EvalTransform(48, 32, 3, MEAN, STD)
    # reference: shorter side 96 -> 48, longer 136 -> 68; crops at x = 0, 18, 36, y = 8
    ref = tnf.interpolate(clip.permute(0, 3, 1, 2).float(), size=(48, 68), mode="bilinear",
                          antialias=True, align_corners=False)
    for k, left in enumerate([0, 18, 36]):
        expected = (ref[..., 8:40, left:left + 32].permute(1, 0, 2, 3) / 255 - MEAN) / STD
        torch.testing.assert_close(transform(clip, k), expected, rtol=0, atol=1.01 / 255 / STD)


def test_eval_errors_are_clear():
    transform = EvalTransform(48, 48, 3)
    with pytest.raises(IndexError, match=r"crop index 3 is outside 0..2"):
        transform(coordinate_clip(), 3)
    with pytest.raises(ValueError, match="crop 64 is larger than the scale 48"):
        EvalTransform(48, 64)
    with pytest.raises(ValueError, match=r"expected uint8 frames \(T, H, W, C\)"):
        transform(coordinate_clip().float())
    assert F.get_size(transform.resize(coordinate_clip())) == [48, 64]
