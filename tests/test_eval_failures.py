"""Validation and test count unreadable videos the same way: in the denominator, wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from nlrepro.config import load_config
from nlrepro.train import train

GOOD = ["index40", "index12", "one_frame"]
BROKEN = ["empty", "text"]


def write_root(root: Path, videos: dict[str, Path]) -> Path:
    """Lists over the session's tiny videos: train all readable, val and test 3 of 5."""
    (root / "v").mkdir(parents=True)
    for path in videos.values():
        if path.exists():
            shutil.copy(path, root / "v" / path.name)
    train = [*GOOD, "index40"]  # labels 0..3: every class occurs
    (root / "train.csv").write_text("".join(f"v/{n}.mp4 {i}\n" for i, n in enumerate(train)))
    for split in ("val", "test"):
        (root / f"{split}.csv").write_text(
            "".join(f"v/{n}.mp4 {i % 4}\n" for i, n in enumerate([*GOOD, *BROKEN])))
    return root


def test_unreadable_val_clips_count_as_wrong_like_test_videos(tmp_path, test_videos):
    root = write_root(tmp_path / "data", test_videos)
    cfg = load_config("proxy", sets=[
        f"data.root={root}", "data.proxy=null", "model.pretrained=null", "data.class_index=null",
        "data.frames=4", "data.stride=2", "data.train_scale=[32,40]", "data.crop=32",
        "data.test_scale=32", "data.test_crop=32", "data.num_clips=1", "data.num_crops=1",
        "data.batch_size=2", "data.num_workers=0", "data.cache_decoded=false",
        "trainer.max_epochs=1", "trainer.threads=1", "trainer.log_every_n_steps=1"])
    summary = train(cfg, tmp_path / "run")
    m = summary["metrics"]
    # 4 classes: top-5 holds every class, so exactly the readable 3 of 5 are right.
    assert m["val/top5_clip"] == pytest.approx(60.0)
    assert m["test/top5_video"] == pytest.approx(60.0)
    assert m["val/top1_clip"] <= 60.0 + 1e-6
    assert summary["videos"]["val_failed"] == 2 and summary["videos"]["test_failed"] == 2
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert logged["val/top5_clip"].dropna().tolist() == pytest.approx([0.6])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"] == m
