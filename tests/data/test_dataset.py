"""VideoDataset on real H.264 files: the intended frames and views, and broken videos."""

import logging
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers.videos import BROKEN_KINDS, decode_index
from nlrepro.config import DataConfig
from nlrepro.data.annotations import VideoRecord
from nlrepro.data.video import VideoDataset

MEAN, STD = 0.45, 0.225


def cfg(**kw) -> DataConfig:
    base = dict(frames=4, stride=2, train_scale=[48, 48], crop=48, test_scale=48, test_crop=48,
                num_clips=10, num_crops=3, flip=True, mean=MEAN, std=STD, max_retries=10)
    return DataConfig(**{**base, **kw})


@pytest.fixture
def root(tmp_path, test_videos) -> Path:
    for name, path in test_videos.items():
        if path.exists():
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def rec(root: Path, name: str, label: int = 1) -> VideoRecord:
    return VideoRecord(root / f"{name}.mp4", label, name)


def uint8_values(clip: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) normalised -> (T, H, W, C) uint8 values."""
    return ((clip * STD + MEAN) * 255).round().permute(1, 2, 3, 0).numpy()


def painted(clip: torch.Tensor) -> list[int]:
    v = uint8_values(clip)
    return [decode_index(f[: f.shape[0] // 2]) for f in v]


def pyav_frames(path: Path) -> np.ndarray:
    """All frames decoded independently of decord (reference)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_train_items_hold_a_strided_window_or_wrap(root):
    torch.manual_seed(0)
    ds = VideoDataset([rec(root, "index40", 3), rec(root, "index12", 2)], cfg(), "train")
    assert len(ds) == 2
    starts = set()
    for _ in range(40):
        clip, label, retries = ds[0]
        assert clip.shape == (3, 4, 48, 48) and label == 3 and retries == 0
        idx = painted(clip)
        assert idx == [idx[0] + 2 * k for k in range(4)] and 0 <= idx[0] <= 40 - 8
        starts.add(idx[0])
    assert len(starts) > 10
    cfg12 = cfg(frames=8)  # span 16 > 12 frames: start 0 and wrap
    assert painted(VideoDataset([rec(root, "index12")], cfg12, "train")[0][0]) == \
        [0, 2, 4, 6, 8, 10, 0, 2]


def test_the_30_views_are_the_intended_clips_and_crops(root):
    ds = VideoDataset([rec(root, "index12", 0), rec(root, "index40", 5)], cfg(), "test")
    assert len(ds) == 2 * 30
    frames = pyav_frames(root / "index40.mp4")
    delta = 40 - 8
    seen = set()
    for i in range(30, 60):
        clip, label, video, c, k, ok = ds[i]
        assert (label, video, ok) == (5, 1, True) and clip.shape == (3, 4, 48, 48)
        assert i == (video * 10 + c) * 3 + k
        seen.add((c, k))
        start, left = delta * c // 9, [0, 8, 16][k]  # evenly spaced clips; left/centre/right
        expected_idx = [start + 2 * t for t in range(4)]
        assert painted(clip) == expected_idx
        expected = frames[expected_idx][:, :, left:left + 48]
        np.testing.assert_array_equal(uint8_values(clip), expected)
    assert seen == {(c, k) for c in range(10) for k in range(3)}


def test_val_is_one_centre_clip_and_centre_crop_at_training_size(root):
    ds = VideoDataset([rec(root, "index40")], cfg(crop=32, train_scale=[48, 56]), "val")
    assert len(ds) == 1
    clip, _, video, c, k, ok = ds[0]
    assert (video, c, k, ok) == (0, 0, 0, True) and clip.shape == (3, 4, 32, 32)
    assert painted(clip) == [16, 18, 20, 22]  # centre window of 40 frames, span 8
    np.testing.assert_array_equal(uint8_values(clip),
                                  pyav_frames(root / "index40.mp4")[16:24:2, 8:40, 16:48])


def test_cached_decoding_gives_the_same_items(root):
    records = [rec(root, "index40"), rec(root, "index12")]
    plain, cached = (VideoDataset(records, cfg(cache_decoded=c), "test") for c in (False, True))
    for i in range(0, len(plain), 7):
        a, b = plain[i], cached[i]
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    draws = []
    for c in (False, True):
        ds = VideoDataset(records, cfg(cache_decoded=c), "train")
        torch.manual_seed(1)  # same random starts, crops and flips
        draws.append([ds[i % 2] for i in range(6)])
    for a, b in zip(*draws):
        assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert set(cached._decoded) == {0, 1}  # each video decoded once, kept


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_training_replaces_a_broken_video_and_says_so(root, kind, caplog):
    torch.manual_seed(0)
    ds = VideoDataset([rec(root, kind, 0), rec(root, "index40", 1)], cfg(), "train")
    with caplog.at_level(logging.WARNING, logger="nlrepro.data.video"):
        clip, label, retries = ds[0]
    assert label == 1 and retries >= 1 and ds.failures == retries
    assert clip.shape == (3, 4, 48, 48)
    assert f"{kind}.mp4" in caplog.text and "replacing it by a random video" in caplog.text


def test_training_gives_up_after_max_retries(root):
    ds = VideoDataset([rec(root, "missing"), rec(root, "empty")], cfg(max_retries=3), "train")
    with pytest.raises(RuntimeError, match=r"4 videos in a row could not be read "
                                           r"\(data.max_retries=3\); last: .*"):
        ds[0]
    assert ds.failures == 4


def test_evaluation_marks_broken_and_excluded_videos_failed(root, caplog):
    names = [*BROKEN_KINDS, "index40", "index12"]
    exclude = {root / "index12.mp4": "bad: listed by check-videos"}
    ds = VideoDataset([rec(root, n, i) for i, n in enumerate(names)], cfg(), "test", exclude)
    assert ds.excluded == 1 and ds.num_videos == len(names)
    with caplog.at_level(logging.WARNING, logger="nlrepro.data.video"):
        items = [ds[i] for i in range(len(ds))]
    ok_by_video = {}
    for clip, label, video, _, _, ok in items:
        assert clip.shape == (3, 4, 48, 48) and label == video
        ok_by_video.setdefault(video, set()).add(ok)
        if not ok:
            assert not clip.any()
    assert ok_by_video == {i: {i == names.index("index40")} for i in range(len(names))}
    assert ds.failures == len(BROKEN_KINDS) + 1  # counted once per video, not per view
    assert caplog.text.count("its views count as failed") == len(BROKEN_KINDS) + 1
    assert "excluded (bad: listed by check-videos)" in caplog.text


def test_training_drops_excluded_videos_and_counts_them(root):
    exclude = {root / "index12.mp4": "bad"}
    ds = VideoDataset([rec(root, "index12"), rec(root, "index40")], cfg(), "train", exclude)
    assert ds.excluded == 1 and [r.video_id for r in ds.records] == ["index40"]


def test_dataset_pickles_without_its_open_reader(root):
    ds = VideoDataset([rec(root, "index40")], cfg(), "test")
    ds[0]
    assert ds._reader is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._reader is None and torch.equal(clone[4][0], ds[4][0])


def test_bad_split_is_refused(root):
    with pytest.raises(ValueError, match=r"split 'eval' is not valid; choose one of "
                                         r"\['train', 'val', 'test'\]"):
        VideoDataset([], cfg(), "eval")
