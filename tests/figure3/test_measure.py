"""figure3.measure: the mass measure against a closed form and against a block whose θ/φ are
set so that probe queries must look at the cue; the proxy ground truth on decoded video."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers.figure3 import SMALL_PROXY, hand_map, make_model
from nlrepro.config import ConfigError
from nlrepro.figure3 import capture as cap
from nlrepro.figure3 import measure as msr
from nlrepro.models.non_local import NonLocalBlock
from nlrepro.proxy import truth as ptruth


def test_cue_mass_ratio_against_a_hand_computation():
    att = hand_map()
    queries = torch.tensor([False, True, False, True])
    keys = torch.tensor([True, False, True, False])
    out = msr.cue_mass_ratio(att, queries, keys)
    # Query 1: mass (0.7 + 0.1) / 1.0, uniform 2/4; query 3: mass 0.9 / 1.0, uniform 1/2.
    mass, uniform = (0.8 + 0.9) / 2, (0.5 + 0.5) / 2
    assert out["mass"] == pytest.approx(mass)
    assert out["uniform"] == pytest.approx(uniform)
    assert out["ratio"] == pytest.approx(mass / uniform)
    assert (out["queries"], out["keys"]) == (2, 2)
    with pytest.raises(ValueError, match="query region"):
        msr.cue_mass_ratio(att, torch.zeros(4, dtype=torch.bool), keys)
    with pytest.raises(ValueError, match="key region"):
        msr.cue_mass_ratio(att, queries, torch.zeros(4, dtype=torch.bool))
    # A dot-product f can be negative: mass counts magnitudes, |-0.6| / (0.6 + 0.2 + 0.2).
    grid = cap.Grid((1, 1, 3), (1.0, 1.0, 1.0))
    signed = cap.AttentionMap(torch.tensor([[-0.6, 0.2, 0.2]]), torch.ones(1, 3, dtype=torch.bool),
                            cap.Grid((1, 1, 1), (1.0, 1.0, 1.0)), grid, "dot")
    out = msr.cue_mass_ratio(signed, torch.tensor([True]), torch.tensor([True, False, False]))
    assert out["mass"] == pytest.approx(0.6) and out["ratio"] == pytest.approx(1.8)


def test_cue_mass_ratio_is_one_for_uniform_and_large_for_cue_frame_affinity():
    """8 time steps of 2×2 keys, the cue's frames are steps 0-1 (8 of 32 keys); queries on a
    late 'probe'.  Uniform affinity over the reachable keys gives exactly 1 (also under a
    space scope that hides some keys); affinity only on the cue's frames gives 32/8 = 4."""
    grid = cap.Grid((8, 2, 2), (2.0, 16.0, 16.0))
    n = grid.size
    cue_frames = grid.region_mask([(0, 4, 0, 32, 0, 32)])
    assert int(cue_frames.sum()) == 8
    probe = grid.region_mask([(14, 16, 4, 12, 20, 28)])
    assert int(probe.sum()) == 1
    full = torch.ones(n, n, dtype=torch.bool)
    uniform = cap.AttentionMap(torch.full((n, n), 1 / n), full, grid, grid, "uniform")
    assert msr.cue_mass_ratio(uniform, probe, cue_frames)["ratio"] == pytest.approx(1.0)
    # Time scope (one key per step): uniform over those is still 1.
    step = torch.arange(n) // 4
    cell = torch.arange(n) % 4
    reach = cell[:, None] == cell[None, :]
    timed = cap.AttentionMap(reach / reach.sum(1, keepdim=True), reach, grid, grid, "time")
    assert msr.cue_mass_ratio(timed, probe, cue_frames)["ratio"] == pytest.approx(1.0)
    # All affinity on the cue's frames: the largest possible ratio, 1 / (8 / 32).
    on_cue = cue_frames.float().expand(n, n) / 8
    looked = cap.AttentionMap(on_cue, full, grid, grid, "cue")
    out = msr.cue_mass_ratio(looked, probe, cue_frames)
    assert out["mass"] == pytest.approx(1.0) and out["ratio"] == pytest.approx(4.0)
    # ... and the same weights on the last frames give 0.
    late = (step >= 6).float().expand(n, n) / 8
    away = cap.AttentionMap(late, full, grid, grid, "late")
    assert msr.cue_mass_ratio(away, probe, cue_frames)["ratio"] == 0.0


def test_auto_query_is_the_most_peaked_and_top_keys_respect_the_scope():
    att = hand_map()
    assert msr.auto_queries(att, 2) == [3, 1]  # 0.9/0.1 over 2 keys beats 0.7/0.1/0.1/0.1
    # Restricted to a region (the proxy's probes) first, then the rest by peakedness.
    assert msr.auto_queries(att, 2, torch.tensor([True, False, True, False])) == [0, 2]
    assert msr.auto_queries(att, 3, torch.tensor([False, False, True, False])) == [2, 3, 1]
    assert msr.peakedness(att)[2] == pytest.approx(1.0)  # uniform row
    keys, weights = msr.top_keys(att, 3, 20)
    assert keys == [2, 3] and weights == pytest.approx([0.9, 0.1])  # unreachable keys never
    assert msr.parse_query("1,0,1", att.query) == 3


@pytest.mark.parametrize("text, message", [
    ("1,1,0", r"--query '1,1,0': y=1 is outside 0\.\.0 \(the block's grid is T×H×W = 2×1×2\)"),
    ("2,0,0", r"t=2 is outside 0\.\.1"),
    ("0,0,-1", r"x=-1 is outside 0\.\.1"),
    ("top", r"--query 'top': expected 'auto' or 't,y,x' \(three integers\)"),
    ("1,0", r"--query '1,0'.*three integers"),
    ("1.5,0,0", r"--query '1\.5,0,0'.*three integers"),
])
def test_query_errors_name_the_value_and_the_valid_range(text, message):
    with pytest.raises(ConfigError, match=message):
        msr.parse_query(text, hand_map().query)


def test_proxy_truth_finds_the_cue_and_probes_in_the_decoded_video(proxy_root):
    """The regions come from re-rendering the clip; check them against the decoded video.

    Only what defines the task is assumed: an early cue square in a key colour, later probes
    in saturated colours on a dark, grey background, small key-coloured distractor squares
    (``ClipInfo.distractors``) that are not probes.
    """
    from nlrepro.config import ProxyConfig
    from nlrepro.proxy import dataset, draw, generator
    from nlrepro.proxy.generator import KEY_PALETTE
    from nlrepro.data.video import open_video, read_frames

    path = next(proxy_root.glob("test/*/test_000000.mp4"))
    truth = ptruth.proxy_truth(path)
    reader = open_video(path)
    frames = read_frames(reader, range(len(reader)), path).float()
    T, H, W = frames.shape[:3]
    probe = torch.zeros(T, H, W, dtype=torch.bool)
    for t0, t1, y0, y1, x0, x1 in truth["probes"]:
        probe[t0:t1, y0:y1, x0:x1] = True
    first = int(probe.flatten(1).any(1).nonzero()[0])
    assert probe[first:].flatten(1).any(1).all()  # the probes stay to the end
    assert (probe.flatten(1).sum(1)[first:] >= 16).all()
    (c0, c1, y0, y1, x0, x1), = truth["cue"]
    assert 0 <= c0 < c1 <= first and y1 - y0 >= 8 and x1 - x0 == y1 - y0
    assert truth["cue_frames"] == [(c0, c1, 0, H, 0, W)]
    cue = frames[c0:c1, y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).mean(0)
    colour = torch.tensor(KEY_PALETTE, dtype=torch.float32)
    assert float(torch.cdist(cue[None], colour).min()) < 30  # the cue's colour survived H.264
    if c1 < first:
        after = frames[c1:first, y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).mean(0)
        assert float(torch.cdist(after[None], colour).min()) > 100  # gone after its frames
    chroma = frames.max(-1).values - frames.min(-1).values
    assert float(chroma[probe].mean()) > 80  # the probe pixels are saturated in the video
    # ... and the saturated pixels of the late frames are the probes, the distractors or the
    # decoy square (1 px of codec bleed): the probe boxes cover the probe and nothing else
    # saturated is left out.
    record = json.loads((proxy_root / dataset.CONFIG_FILE).read_text())["proxy"]
    _, info = generator.render_indexed(ProxyConfig(**record), "test", 0)
    clutter = torch.zeros(T, H, W, dtype=torch.bool)
    d = draw.DISTRACTOR_SIZE
    for t, y, x in info.distractors:
        clutter[t, y:y + d, x:x + d] = True
    assert clutter.any()
    if info.decoy_square is not None:
        y, x, side = info.decoy_square
        clutter[first:, y:y + side, x:x + side] = True
    near = F.max_pool2d((probe | clutter)[first:, None].float(), 3, 1, 1)[:, 0].bool()
    vivid = chroma[first:] > 100
    assert vivid.any() and float((vivid & near).sum() / vivid.sum()) > 0.95
    assert ptruth.proxy_truth(proxy_root / "train.csv") is None


def test_mass_ratio_of_a_block_wired_to_find_the_cue():
    """Channel 0 marks the cue (time step 0), channel 1 the probes (time step 3).

    Every output channel of θ reads channel 1 and of φ channel 0, scaled by s, so the logit of
    a probe query is (C/2)·s²·(C/2)^-½ on a cue key and 0 elsewhere: each probe query puts
    n·e^a / (n·e^a + M - n) on the n cue keys (a = that logit) — the closed form below.
    """
    C, T, H, W, s = 4, 4, 4, 4, 3.0
    block = NonLocalBlock(C, "embedded_gaussian", subsample=True).eval()
    with torch.no_grad():
        for conv, channel in ((block.theta, 1), (block.phi, 0)):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, channel] = s
    x = torch.zeros(1, C, T, H, W)
    x[0, 0, 0, :2, :2] = 1.0       # the cue: one pooled key cell at t = 0
    x[0, 1, 3] = 1.0               # the probes: every position at t = 3
    query, key = cap.grids_for(block, x.shape, (1, 3, 16, 32, 32))
    att = cap.AttentionMap(block.affinity(x)[0], cap.scope_support(block, x), query, key, "wired")
    probes = torch.zeros(T, H, W, dtype=torch.bool)
    probes[3] = True
    cue = key.region_mask([(0, 4, 0, 16, 0, 16)])   # frames 0-3, top-left 16² = key (0, 0, 0)
    assert cue.sum() == 1
    out = msr.cue_mass_ratio(att, probes.flatten(), cue)
    M, n, a = key.size, 1, (C // 2) * s * s * (C // 2) ** -0.5
    expected = n * math.exp(a) / (n * math.exp(a) + M - n)
    assert out["mass"] == pytest.approx(expected, rel=1e-5)
    assert out["uniform"] == pytest.approx(n / M)
    assert out["ratio"] == pytest.approx(expected * M / n, rel=1e-5) and out["ratio"] > 10


def test_strongest_block_takes_the_largest_ratio_over_blocks_and_directions():
    def mean(p2c, c2p):
        out = {}
        if p2c is not None:
            out["probe_to_cue"] = {"cue_frames": {"ratio": p2c}, "cue": {"ratio": 9.0}}
        if c2p is not None:
            out["cue_to_probe"] = {"probe_frames": {"ratio": c2p}}
        return out

    per_block = {"res3.0": mean(1.2, 0.9), "res3.1": mean(None, 1.7), "res4.0": mean(1.7, 1.1)}
    # The cue box's 9.0 is not a headline ratio; the tie at 1.7 goes to the earlier block.
    assert msr.strongest_block(per_block) == ("res3.1", "cue_to_probe", 1.7)
    per_block["res4.0"] = mean(1.75, None)
    assert msr.strongest_block(per_block) == ("res4.0", "probe_to_cue", 1.75)
    with pytest.raises(ConfigError, match="no block's cross-time affinity"):
        msr.strongest_block({"res3.0": {}})


def test_example_video_is_the_first_clip_with_a_strong_enough_lookup(proxy_root):
    """For each direction and threshold: the first test clip (list order) in which a query of
    that direction puts at least the threshold of its affinity on the other event's frames;
    the first clip when none does."""
    model = make_model(sets=(f"data.root={proxy_root}", *SMALL_PROXY))
    paths = ptruth.proxy_test_videos(next(proxy_root.glob("test/*/*.mp4")))
    assert len(paths) == 3
    for direction in msr.DIRECTIONS:
        best = []
        for path in paths:
            clip = cap.load_clip(model.cfg, path)
            att = cap.capture(model, clip.tensor)
            source, target = msr.lookup_masks(msr.proxy_masks(att, clip), direction)
            best.append(float(msr.lookup_mass(att, target)[source.bool()].max()))
        for threshold in sorted(set(best)) + [max(best) + 0.01]:
            want = next((p for p, m in zip(paths, best) if m >= threshold), paths[0])
            assert msr.example_video(model, model.cfg, paths, None, direction,
                                   min_mass=threshold) == want


def test_typical_mass_is_the_directions_mean_share_on_the_other_events_frames():
    mean = {"cue_to_probe": {"probe_frames": {"mass": 0.81, "ratio": 2.07}},
            "probe_to_cue": {"cue": {"mass": 0.9, "ratio": 2.2}}}
    assert msr.typical_mass(mean, "cue_to_probe") == 0.81
    # Only the other event's whole frames count; unmeasured falls back to half.
    assert msr.typical_mass(mean, "probe_to_cue") == msr.EXAMPLE_MASS == 0.5
