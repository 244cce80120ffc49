"""The relations task (generator v6): each kind's rule on decoded frames, its geometry, and
the additive limits stated in nlrepro/proxy/relations.py."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest

from helpers.proxy_rule import decode, draw_clips, quadrant, relation_label_from_pixels
from nlrepro.choices import RELATION_KINDS
from nlrepro.config import ConfigError, ProxyConfig, check_proxy_config
from nlrepro.proxy import dataset as proxy_dataset
from nlrepro.proxy import generator
from nlrepro.proxy.relations import OBJECT

REL = ProxyConfig(task="relations", num_train=24, num_val=4, num_test=4, seed=5, cue_size=8)


@pytest.fixture(scope="module")
def rel_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return proxy_dataset.make_proxy_data(tmp_path_factory.mktemp("r") / "rel", REL,
                                         progress=False)


def test_every_kind_and_label_is_drawn_evenly() -> None:
    counts = collections.Counter()
    for _, info in draw_clips(REL, 800):
        counts[info.kind] += 1
        counts[info.label] += 1
    for kind in RELATION_KINDS:
        assert 150 <= counts[kind] <= 250, counts
    for label in range(4):
        assert 150 <= counts[label] <= 250, counts


def test_each_kind_places_cue_and_probe_as_its_mechanism_needs() -> None:
    seen = set()
    for clip, info in draw_clips(REL, 200):
        (c0, c1), (cy, cx, side) = info.cue_frames, info.cue_box
        t0, py, px = info.probe_boxes[0]
        p1 = info.probe_boxes[-1][0] + 1
        assert side == OBJECT and {b[1:] for b in info.probe_boxes} == {(py, px)}
        same_place = (cy, cx) == (py, px)
        overlap = c0 < p1 and t0 < c1
        seen.add(info.kind)
        if info.kind == "time":
            assert same_place and not overlap
        elif info.kind == "space":
            assert overlap and quadrant(cy, cx) != quadrant(py, px)
        else:
            assert not overlap and quadrant(cy, cx) != quadrant(py, px)
        if info.kind == "chain":
            colour, oy, ox = info.other_cue
            q0, q1, wy, wx = info.pointer
            assert (wy, wx) == (cy, cx) and c1 <= q0 and q1 <= t0
            assert len({quadrant(cy, cx), quadrant(oy, ox), quadrant(py, px)}) == 3
            assert colour != info.cue_colour
            assert (clip[q0, cy + 2, cx + 2] > 200).all()  # the white pointer
        else:
            assert info.other_cue is None and info.pointer is None
    assert seen == set(RELATION_KINDS)


def test_early_and_late_events_never_share_a_pooled_time_step() -> None:
    """The additive limit of the time, spacetime and chain kinds: the temporal pool pairs
    frames (2t, 2t+1), and no pair holds both the cue and the probe, so a C2D's logits are
    a sum of a cue part and a probe part; no sum does better than 75% (CueMatch's argument).
    The space kind shows both in one frame: convolutions can relate them (no limit)."""
    for frames in (8, 32):
        p = ProxyConfig(task="relations", frames=frames, cue_size=8)
        for _, info in draw_clips(p, 120):
            if info.kind == "space":
                continue
            cue_steps = {t // 2 for t in range(*info.cue_frames)}
            probe_steps = {t // 2 for t, _, _ in info.probe_boxes}
            assert not cue_steps & probe_steps, info


def test_a_single_lookup_from_the_probe_is_at_chance_on_the_chain() -> None:
    """Chain: a clash ring is always the other cue's colour, so the set of early colours and
    the ring colour say nothing about the label; only the pointer picks the cue."""
    tally = collections.Counter()
    for _, info in draw_clips(REL, 1200):
        if info.kind != "chain":
            continue
        colours = {info.cue_colour, info.other_cue[0]}
        assert info.probe_key in colours
        tally[info.label // 2] += 1
    assert abs(tally[0] - tally[1]) < 0.2 * sum(tally.values()), tally


def test_the_rule_holds_on_decoded_videos_of_every_kind(rel_dataset: Path) -> None:
    kinds = collections.Counter()
    for split in ("train", "val", "test"):
        for line in (rel_dataset / f"{split}.csv").read_text().splitlines():
            rel, label = line.split()
            index = int(Path(rel).stem.rsplit("_", 1)[1])
            _, info = generator.render_indexed(REL, split, index)
            assert relation_label_from_pixels(decode(rel_dataset / rel)) == int(label), rel
            kinds[info.kind] += 1
    assert set(kinds) == set(RELATION_KINDS), kinds


def test_the_oracle_sees_a_wrong_cue() -> None:
    """The oracle is not vacuous: recolouring the cue flips the match bit."""
    clip, info = next(c for c in draw_clips(REL, 40) if c[1].kind == "spacetime")
    (c0, c1), (cy, cx, k) = info.cue_frames, info.cue_box
    assert relation_label_from_pixels(clip) == info.label
    # a clash becomes a match (the cue takes the ring's colour), a match a clash
    other = info.probe_key if info.probe_key != info.cue_colour else (info.cue_colour + 1) % 3
    clip = clip.copy()
    clip[c0:c1, cy:cy + k, cx:cx + k] = generator.KEY_PALETTE[other]
    assert relation_label_from_pixels(clip) != info.label


def test_generator_version_6_still_draws_its_clips() -> None:
    """The relations tables were made with these clips: the digest was taken from the code that
    made them. If a change to the drawing is meant, bump the version in generator.VERSIONS (a
    new pre-registration) and take a new digest."""
    digest = hashlib.sha256()
    for p in (ProxyConfig(task="relations", cue_size=8),
              ProxyConfig(task="relations", cue_size=8, frames=32)):
        for i in range(8):
            clip, info = generator.render_indexed(p, "test", i)
            digest.update(clip.tobytes())
            digest.update(repr((info, info.kind, info.other_cue, info.pointer)).encode())
    assert generator.VERSIONS["relations"] == 6
    assert digest.hexdigest() == "01952e076a21cc9e98fb518c3e6200b62b7fb8c0ff4a58dd68f39fe00534e7fe"

def test_the_version_is_recorded_per_task() -> None:
    assert proxy_dataset.config_record(REL)["generator_version"] == 6
    assert proxy_dataset.config_record(ProxyConfig())["generator_version"] == 5
    assert "task" not in proxy_dataset.config_record(ProxyConfig())["proxy"]


def test_a_dataset_of_the_other_task_is_refused(rel_dataset: Path) -> None:
    from nlrepro.config import load_config

    cfg = load_config("proxy", {"data": {"root": str(rel_dataset), "proxy": {
        **{k: getattr(REL, k) for k in ("num_train", "num_val", "num_test", "seed")},
        "cue_size": 8}}})
    with pytest.raises(ConfigError, match="generator_version"):
        proxy_dataset.ensure_proxy_data(cfg)


def test_an_unknown_task_is_named() -> None:
    with pytest.raises(ConfigError, match="data.proxy.task: 'chains'.*cuematch, relations"):
        check_proxy_config(ProxyConfig(task="chains"))
