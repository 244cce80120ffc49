"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny real H.264 videos, written once per session (see tests/helpers/videos.py).

    ``index40`` / ``index12``: 40 / 12 painted frames of 64×48; ``one_frame``; and one
    file of every broken kind in ``BROKEN_KINDS`` (``missing`` does not exist).
    """
    from helpers.videos import BROKEN_KINDS, write_broken, write_index_video

    folder = tmp_path_factory.mktemp("videos")
    videos = {"index40": write_index_video(folder / "index40.mp4", 40),
              "index12": write_index_video(folder / "index12.mp4", 12),
              "one_frame": write_index_video(folder / "one_frame.mp4", 1)}
    videos.update({kind: write_broken(folder, kind) for kind in BROKEN_KINDS})
    return videos
