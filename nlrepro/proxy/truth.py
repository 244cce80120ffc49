"""Ground truth of a stored proxy video: where its cue and probes are (Figure 3's measure).

The generator is deterministic per clip, so a video's events are known by drawing the clip
again from its path (``<root>/<split>/<class>/<split>_<index>.mp4``) and the dataset's
``proxy_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nlrepro.choices import SPLITS
from nlrepro.config import ProxyConfig
from nlrepro.proxy.dataset import CONFIG_FILE
from nlrepro.proxy.generator import PROBE_SIZE, ClipInfo, generator_version, render_indexed

KIND_TASKS = ("relations", "timeline")  # the tasks that draw a relation kind per clip


def in_view(info: ClipInfo) -> bool:
    """Whether a clip shows both of its events (the timeline task's short clips do not show
    the kinds that happen before them)."""
    return info.cue_frames[1] > info.cue_frames[0] and bool(info.probe_boxes)


# A box in video units: frames [t0, t1), pixels [y0, y1), [x0, x1).
Region = tuple[float, float, float, float, float, float]


def proxy_truth(path: Path) -> dict[str, list[Region]] | None:
    """Where the cue and the probe of a proxy video are, in source units; None otherwise.

    The generator is deterministic per clip (``<root>/<split>/<class>/<split>_<index>.mp4``
    and ``<root>/proxy_config.json``), so the clip is rendered again and its ``ClipInfo``
    read: ``cue`` is the ``cue_box`` square over ``cue_frames``; ``probes`` the probe's box
    in each of its frames (``probe_boxes``, drawn over any decoy); ``cue_frames`` and
    ``probe_frames`` the whole frames of each event.
    """
    path = Path(path)
    record_file = path.parent.parent.parent / CONFIG_FILE
    split, _, index = path.stem.rpartition("_")
    if not record_file.is_file() or split not in SPLITS or not index.isdigit():
        return None
    record = json.loads(record_file.read_text())
    cfg = ProxyConfig(**record["proxy"])
    if record.get("generator_version") != generator_version(cfg):
        return None
    frames, info = render_indexed(cfg, split, int(index))  # as the writer drew it
    (c0, c1), (cy, cx, side), p0 = info.cue_frames, info.cue_box, info.probe_start
    if not in_view(info):
        return None  # a timeline kind that happens before this (short) clip
    k = PROBE_SIZE  # the probe is 8×8 in both tasks
    probes: list[Region] = [(t, t + 1, y, y + k, x, x + k) for t, y, x in info.probe_boxes]
    T, H, W = frames.shape[:3]
    return {"cue": [(c0, c1, cy, cy + side, cx, cx + side)], "probes": probes,
            "cue_frames": [(c0, c1, 0, H, 0, W)], "probe_frames": [(p0, T, 0, H, 0, W)]}


def test_kinds(root: Path) -> list[tuple[str, bool]] | None:
    """The relation kind of every test video of the proxy dataset at ``root``, and whether the
    video shows its cue (the timeline task's short clips do not show the kinds that happen
    before them), in the order of ``test.csv`` (a run's ``video_idx``); None for a dataset
    without kinds (CueMatch) or without a record of the current generator."""
    record_file = Path(root) / CONFIG_FILE
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    cfg = ProxyConfig(**record["proxy"])
    if cfg.task not in KIND_TASKS or record.get("generator_version") != generator_version(cfg):
        return None
    kinds = []
    for line in (Path(root) / "test.csv").read_text().splitlines():
        if line.strip():
            index = int(Path(line.split()[0]).stem.rpartition("_")[2])
            info = render_indexed(cfg, "test", index)[1]
            kinds.append((info.kind, in_view(info)))
    return kinds


def proxy_test_videos(path: Path) -> list[Path]:
    """The test list of the proxy dataset that holds ``path`` (``<root>/test.csv``)."""
    root = Path(path).parent.parent.parent
    lines = (root / "test.csv").read_text().splitlines()
    return [root / line.split()[0] for line in lines if line.strip()]
