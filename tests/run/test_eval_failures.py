"""Validation and test count unreadable videos the same way: in the denominator, wrong."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.tiny import GOOD, tiny_sets, write_root

from nlrepro.config import load_config
from nlrepro.run.train import train

BROKEN = ["empty", "text"]


def test_unreadable_val_clips_count_as_wrong_like_test_videos(tmp_path, test_videos):
    root = write_root(tmp_path / "data", test_videos, val=[*GOOD, *BROKEN])
    cfg = load_config("proxy", sets=tiny_sets(root))
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
