"""data.decoder: pyav gives decord's frames, bit for bit, on real H.264 files; it takes over
(with one log line) where decord cannot be imported.

Tolerance: none.  Both libraries decode with FFmpeg's H.264 decoder and convert yuv420p to
RGB24 with swscale at the same size, so equal arrays are expected, and checked exactly.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from helpers.videos import BROKEN_KINDS, write_video
from nlrepro.config import ConfigError, load_config
from nlrepro.data import video
from nlrepro.data.annotations import VideoRecord
from nlrepro.data.pyav_reader import PyAVReader
from nlrepro.data.video import VideoDataset, VideoError, open_video, read_frames
from nlrepro.run.identity import config_hash

decord = pytest.importorskip("decord")


@pytest.fixture(scope="module")
def more_videos(tmp_path_factory):
    """Noise (no flat areas to hide a conversion difference), sizes that are not multiples of
    16, a long GOP."""
    folder = tmp_path_factory.mktemp("pyav")
    rng = np.random.default_rng(0)
    return {
        "noise": write_video(folder / "noise.mp4", rng.integers(0, 256, (30, 48, 64, 3), np.uint8)),
        "odd": write_video(folder / "odd.mp4", rng.integers(0, 256, (17, 38, 54, 3), np.uint8)),
        "long_gop": write_video(folder / "gop.mp4", rng.integers(0, 256, (70, 32, 32, 3), np.uint8),
                                gop=32),
    }


def both(path):
    return open_video(path, "decord"), open_video(path, "pyav")


@pytest.mark.parametrize("name", ["index40", "index12", "one_frame", "noise", "odd", "long_gop"])
def test_every_frame_equals_decords(test_videos, more_videos, name):
    path = {**test_videos, **more_videos}[name]
    d, p = both(path)
    assert isinstance(p, PyAVReader)
    assert len(p) == len(d)
    everything = list(range(len(d)))
    assert np.array_equal(p.get_batch(everything).asnumpy(), d.get_batch(everything).asnumpy())


def test_random_access_in_any_order_with_repeats(more_videos):
    path = more_videos["long_gop"]
    d, p = both(path)
    rng = np.random.default_rng(1)
    for _ in range(5):  # backward and forward seeks on one open reader
        idx = rng.integers(0, len(d), 12)
        assert torch.equal(read_frames(p, idx, path), read_frames(d, idx, path))


@pytest.mark.parametrize("kind", [k for k in BROKEN_KINDS])
def test_broken_files_are_video_errors_for_both(test_videos, kind):
    path = test_videos[kind]

    def outcome(decoder: str) -> str:
        try:
            reader = open_video(path, decoder)
            read_frames(reader, np.arange(len(reader)), path)
        except VideoError:
            return "error"
        return "ok"

    assert outcome("pyav") == outcome("decord")


def test_dataset_items_are_the_same_with_either_decoder(test_videos, tmp_path):
    records = [VideoRecord(test_videos[n], i, n) for i, n in enumerate(("index40", "index12"))]
    items = {}
    for decoder in ("decord", "pyav"):
        cfg = load_config("proxy", sets=[f"data.decoder={decoder}", "data.frames=8",
                                         "data.stride=2", "data.num_clips=3",
                                         "data.num_crops=3", "data.test_scale=48",
                                         "data.test_crop=48", "data.cache_decoded=false"])
        ds = VideoDataset(records, cfg.data, "test")
        items[decoder] = [ds[i] for i in range(len(ds))]
    for a, b in zip(items["decord"], items["pyav"]):
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:] and a[-1] is True


def test_without_decord_pyav_takes_over_with_one_log_line(test_videos, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    monkeypatch.setattr(video, "_fallback_logged", False)
    with caplog.at_level(logging.INFO, logger="nlrepro.data.video"):
        first = open_video(test_videos["index12"])
        open_video(test_videos["index40"])
    assert isinstance(first, PyAVReader)
    lines = [r.getMessage() for r in caplog.records if "PyAV" in r.getMessage()]
    assert len(lines) == 1 and "decord is not installed" in lines[0]


def test_decoder_is_validated_and_not_part_of_the_run_id():
    with pytest.raises(ConfigError, match=r"data.decoder: 'opencv' is not valid"):
        load_config("proxy", sets=["data.decoder=opencv"])
    assert config_hash(load_config("proxy", sets=["data.decoder=pyav"])) == \
        config_hash(load_config("proxy"))
