"""figure3.capture: the captured affinity equals Eq. 1 written out here (θ/φ/w_f applied by
hand to the block's input, taken with a separate hook), on tiny proxy models, and its grids."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.figure3 import reference_affinity, block_output_from, make_model, block_io, reference_affinity_support
from nlrepro.choices import INSTANTIATIONS, SCOPES
from nlrepro.config import ConfigError
from nlrepro.figure3 import capture as cap
from nlrepro.figure3 import measure as msr


def test_grid_centres_and_region_mask():
    grid = cap.Grid((4, 2, 2), (4.0, 16.0, 16.0))  # 16 frames of 32×32, cells of 4 frames × 16²
    assert grid.unravel(grid.ravel(3, 1, 0)) == (3, 1, 0) and grid.ravel(3, 1, 0) == 14
    assert grid.centre(grid.ravel(1, 0, 1)) == (5.5, 7.5, 23.5)
    # Frames [1, 3) of a box y in [4, 20), x in [8, 24): time step 0, rows 0-1, cols 0-1.
    mask = grid.region_mask([(1, 3, 4, 20, 8, 24)]).reshape(4, 2, 2)
    assert mask[0].all() and not mask[1:].any()
    # A box inside one cell, frames 12-15: only (3, 1, 1).
    mask = grid.region_mask([(12, 16, 20, 27, 20, 27)])
    assert mask.nonzero().flatten().tolist() == [grid.ravel(3, 1, 1)]


def test_source_regions_map_onto_the_clip():
    """Frames through the sampled indices, pixels through resize (×2) and crop (left 8)."""
    clip = cap.Clip(path=None, tensor=None, frames=torch.zeros(4, 32, 32, 3, dtype=torch.uint8),
                  indices=[4, 6, 8, 10], scale=2.0, offset=(0, 8))
    regions = cap.to_clip_regions(clip, [(5, 9, 2, 10, 0, 10),      # source frames 6, 8
                                       (0, 20, 0, 4, 30, 40)])    # right of the crop: dropped
    assert regions == [(1, 2, 4.0, 20.0, 0.0, 12.0), (2, 3, 4.0, 20.0, 0.0, 12.0)]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_capture_returns_the_blocks_affinity_on_its_real_input(instantiation, scope):
    model = make_model(instantiation, scope)
    name, block = next(iter(model.model.nonlocal_blocks().items()))
    clip = torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(1))
    att = cap.capture(model, clip)
    x, z = block_io(model, name, clip)
    assert att.block == name
    assert att.query.shape == tuple(x.shape[2:])
    assert att.key.shape == (x.shape[2], x.shape[3] // 2, x.shape[4] // 2)
    assert att.query.cell == (16 / x.shape[2], 32 / x.shape[3], 32 / x.shape[4])
    # The block's own method, and Eq. 1 written out by hand.
    torch.testing.assert_close(att.weights, block.affinity(x)[0], rtol=1e-5, atol=1e-7)
    ref = reference_affinity(block, x)
    # float32 on both sides: tolerance relative to the largest weight (dot products cancel)
    scale = float(ref.abs().max())
    torch.testing.assert_close(att.weights, ref, rtol=1e-4, atol=1e-5 * scale)
    assert torch.equal(att.reachable, reference_affinity_support(block, x))
    assert not att.weights[~att.reachable].any()
    if instantiation in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(att.weights.sum(1), torch.ones(len(att.weights)))
        assert (att.weights >= 0).all()
    if instantiation == "concatenation":
        assert (att.weights >= 0).all()
    # The affinity is the one the block used: its output rebuilt from it (the block itself
    # runs its fast kernels, never this matrix).
    torch.testing.assert_close(block_output_from(block, x, att.weights), z,
                               rtol=1e-4, atol=1e-4 * float(z.abs().max()))
    torch.testing.assert_close(att.logits, model(clip)[0].detach())
    # Top keys: the argmax (and the sorted top-k) of each query's reachable row.
    masked = att.weights.masked_fill(~att.reachable, -math.inf)
    for q in range(att.query.size):
        keys, weights = msr.top_keys(att, q, 3)
        assert keys[0] == int(masked[q].argmax())
        assert weights == pytest.approx(masked[q].topk(len(keys)).values.tolist())
        assert len(keys) == min(3, int(att.reachable[q].sum()))


def test_capture_picks_the_named_block_and_errors_name_the_valid_blocks():
    model = make_model(blocks=5)
    names = list(model.model.nonlocal_blocks())
    assert len(names) == 5
    with pytest.raises(ConfigError, match="valid: " + ", ".join(names).replace(".", r"\.")):
        cap.pick_block(model, "res9.9")
    assert cap.pick_block(model, names[2])[0] == names[2]
    clip = torch.randn(1, 3, 16, 32, 32)
    att = cap.capture(model, clip, names[0])  # a res3 block: a finer grid than res4's
    x, _ = block_io(model, names[0], clip)
    assert att.block == names[0] and att.query.shape == tuple(x.shape[2:])
    torch.testing.assert_close(
        att.weights, model.model.nonlocal_blocks()[names[0]].affinity(x)[0])
    with pytest.raises(ConfigError, match="no non-local block"):
        cap.pick_block(make_model(blocks=0), None)


def test_capture_blocks_is_capture_per_block_from_one_forward_pass():
    """Every block's affinity from one pass equals its own ``capture``; the model runs once."""
    model = make_model(blocks=5)
    clip = torch.randn(1, 3, 8, 32, 32)
    names = list(cap.nonlocal_blocks(model))
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    together = cap.capture_blocks(model, clip, names)
    assert len(calls) == 1 and list(together) == names
    for name in names:
        alone = cap.capture(model, clip, name)
        assert torch.equal(together[name].weights, alone.weights)
        assert torch.equal(together[name].reachable, alone.reachable)
        assert together[name].query == alone.query and together[name].key == alone.key
    assert list(cap.capture_blocks(model, clip, [None])) == names[:1]
