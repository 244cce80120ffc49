"""The timeline task (generator v7): short clips are the end of the long ones, each kind's
rule on decoded frames and its geometry, and the limits stated in nlrepro/proxy/timeline.py."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pytest

from helpers.proxy_rule import decode, draw_clips, quadrant, relation_label_from_pixels
from nlrepro.config import ConfigError, ProxyConfig, check_proxy_config
from nlrepro.proxy import dataset as proxy_dataset
from nlrepro.proxy import generator
from nlrepro.proxy.timeline import BEFORE, KEYS, KIND_WEIGHTS, KINDS, TIMELINE, WINDOW

SHORT = ProxyConfig(task="timeline", num_train=30, num_val=4, num_test=4, seed=5, cue_size=8)
LONG = ProxyConfig(**{**SHORT.__dict__, "frames": TIMELINE})


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return proxy_dataset.make_proxy_data(tmp_path_factory.mktemp("t") / "long", LONG,
                                         progress=False)


def test_a_short_clip_is_the_end_of_the_long_one() -> None:
    """One timeline per clip: Table 2g's long clip shows Table 2a-2f's clip as its last
    frames, at the same frame rate (the paper's 128-frame clips are 4x longer, not faster)."""
    for (short, s_info), (long, l_info) in zip(draw_clips(SHORT, 40), draw_clips(LONG, 40)):
        assert short.shape[0] == WINDOW and long.shape[0] == TIMELINE
        np.testing.assert_array_equal(short, long[TIMELINE - WINDOW:])
        assert (s_info.label, s_info.kind, s_info.cue_colour) == \
               (l_info.label, l_info.kind, l_info.cue_colour)


def test_every_kind_is_drawn_at_its_weight_and_the_labels_evenly() -> None:
    counts = collections.Counter()
    n = 1600
    for _, info in draw_clips(SHORT, n):
        counts[info.kind] += 1
        counts[info.label] += 1
    for kind, weight in zip(KINDS, KIND_WEIGHTS):
        assert abs(counts[kind] - weight * n) < 4 * (weight * n) ** 0.5, counts
    for label in range(4):
        assert abs(counts[label] - n / 4) < 4 * (n / 4) ** 0.5, counts


def test_only_two_key_colours_are_drawn() -> None:
    """Two key colours: "red or not" is the whole colour rule, so no colour feature solves a
    part of the match and leaves the rest (v6's plateau)."""
    for clip, info in draw_clips(LONG, 60):
        assert {info.cue_colour, info.probe_key} <= set(KEYS)
        keys = generator.KEY_PALETTE.astype(int)
        others = [c for c in range(len(keys)) if c not in KEYS]
        near = [(np.abs(clip.astype(int) - keys[c]).sum(-1) < 40).sum() for c in others]
        assert sum(near) == 0


def test_each_kind_places_its_events_as_its_mechanism_needs() -> None:
    """In long-clip frames: four kinds inside the short window, as in v6; ``early`` wholly
    before it (cue and probe together, apart in space); ``far`` with its cue in the first
    frames and its probe at the end, 12 or more time steps apart after the temporal pool."""
    w0 = TIMELINE - WINDOW
    seen = set()
    for clip, info in draw_clips(LONG, 300):
        (c0, c1), (cy, cx, _) = info.cue_frames, info.cue_box
        t0, py, px = info.probe_boxes[0]
        p1 = info.probe_boxes[-1][0] + 1
        seen.add(info.kind)
        overlap = c0 < p1 and t0 < c1
        if info.kind == "early":
            assert p1 <= w0 and (c0, c1) == (t0, p1) and quadrant(cy, cx) != quadrant(py, px)
        elif info.kind == "far":
            assert c1 <= 4 and p1 == TIMELINE and t0 // 2 - (c1 - 1) // 2 >= 12
            assert quadrant(cy, cx) != quadrant(py, px)
        else:
            assert c0 >= w0 and p1 == (w0 + 6 if info.kind == "space" else TIMELINE)
            if info.kind == "time":
                assert (cy, cx) == (py, px) and not overlap
            elif info.kind == "space":
                assert overlap and quadrant(cy, cx) != quadrant(py, px)
            else:
                assert not overlap and quadrant(cy, cx) != quadrant(py, px)
    assert seen == set(KINDS)


def test_a_short_clip_shows_no_event_of_the_kinds_before_it() -> None:
    """What makes longer clips help: a short clip of an ``early`` clip shows neither cue nor
    probe (chance is 25%); of a ``far`` clip, only the probe (50%).  Every other kind shows
    both events in the short clip."""
    for clip, info in draw_clips(SHORT, 300):
        shown = info.cue_frames[1] > info.cue_frames[0]
        assert shown == (info.kind not in BEFORE)
        assert bool(info.probe_boxes) == (info.kind != "early")


def test_events_in_the_short_clip_never_share_a_pooled_time_step() -> None:
    """The additive limit (v6's argument) inside the short clip and in the long one: the
    temporal pool pairs frames (2t, 2t+1), and outside the space-like kinds no pair holds both
    the cue and the probe, so a C2D's logits are a sum of a cue part and a probe part."""
    for p in (SHORT, LONG):
        for _, info in draw_clips(p, 200):
            if info.kind in ("space", "early") or info.cue_frames[1] <= info.cue_frames[0]:
                continue
            cue_steps = {t // 2 for t in range(*info.cue_frames)}
            probe_steps = {t // 2 for t, _, _ in info.probe_boxes}
            assert not cue_steps & probe_steps, info


def test_the_rule_holds_on_decoded_long_videos_of_every_kind(long_dataset: Path) -> None:
    kinds = collections.Counter()
    for split in ("train", "val", "test"):
        for line in (long_dataset / f"{split}.csv").read_text().splitlines():
            rel, label = line.split()
            index = int(Path(rel).stem.rsplit("_", 1)[1])
            _, info = generator.render_indexed(LONG, split, index)
            assert relation_label_from_pixels(decode(long_dataset / rel)) == int(label), rel
            kinds[info.kind] += 1
    assert set(kinds) == set(KINDS), kinds


def test_generator_version_7_still_draws_its_clips() -> None:
    """The timeline tables were made with these clips: the digest was taken from the code that
    made them. If a change to the drawing is meant, bump the version in generator.VERSIONS (a
    new pre-registration) and take a new digest."""
    digest = hashlib.sha256()
    for p in (ProxyConfig(task="timeline", cue_size=8),
              ProxyConfig(task="timeline", cue_size=8, frames=TIMELINE)):
        for i in range(8):
            clip, info = generator.render_indexed(p, "test", i)
            digest.update(clip.tobytes())
            digest.update(repr((info, info.kind, info.other_cue, info.pointer)).encode())
    assert generator.VERSIONS["timeline"] == 7
    assert digest.hexdigest() == "c0d7cbfd87af797a93cd7638903c318748418182a472b5daee9a3209a1789cca"


def test_the_version_is_recorded() -> None:
    assert proxy_dataset.config_record(SHORT)["generator_version"] == 7


def test_a_clip_longer_than_the_timeline_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"data.proxy.frames: 40 .*draws 32 frames"):
        check_proxy_config(ProxyConfig(task="timeline", cue_size=8, frames=40))
