"""Temporal sampling: the indices, and the frames decord returns for them."""

import numpy as np
import pytest
import torch

from helpers.videos import decode_index
from nlrepro.data.transforms import evenly_spaced
from nlrepro.data.video import VideoError, open_video, read_frames, test_indices, train_indices


def painted(frames: torch.Tensor) -> list[int]:
    """Frame indices painted in the top half of decoded uint8 frames (T, H, W, C)."""
    return [decode_index(f[: f.shape[0] // 2].numpy()) for f in frames]


def test_train_clip_is_every_stride_th_frame_of_a_random_window():
    starts = set()
    for seed in range(200):
        idx = train_indices(300, 32, 2, torch.Generator().manual_seed(seed))
        start = int(idx[0])
        np.testing.assert_array_equal(idx, start + 2 * np.arange(32))  # 64 frames, every other
        assert 0 <= start <= 300 - 64
        starts.add(start)
    assert min(starts) < 20 and max(starts) > 300 - 64 - 20  # the whole range is reachable
    # the 128-frame recipe: stride 1
    idx = train_indices(300, 128, 1, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(np.diff(idx), np.ones(127))


def test_train_start_is_uniform_over_all_positions():
    counts = np.bincount([int(train_indices(10, 4, 2, torch.Generator().manual_seed(s))[0])
                          for s in range(3000)], minlength=3)
    assert len(counts) == 3 and counts.min() > 850  # starts 0, 1, 2 each ≈ 1000 times


def test_short_video_wraps_modulo_its_length():
    idx = train_indices(10, 8, 2, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(idx, [0, 2, 4, 6, 8, 0, 2, 4])
    np.testing.assert_array_equal(train_indices(1, 4, 2), [0, 0, 0, 0])
    np.testing.assert_array_equal(test_indices(7, 4, 2, 3), [[0, 2, 4, 6]] * 3)


def test_test_clips_are_evenly_spaced_over_the_video():
    idx = test_indices(300, 32, 2, 10)
    delta = 300 - 64
    np.testing.assert_array_equal(idx[:, 0], [delta * k // 9 for k in range(10)])
    # the first window starts at frame 0, the last one ends at frame 299 (its last kept: 298)
    assert idx[0, 0] == 0 and idx[-1, -1] == 298
    np.testing.assert_array_equal(idx - idx[:, :1], np.tile(2 * np.arange(32), (10, 1)))
    np.testing.assert_array_equal(test_indices(300, 32, 2, 1), [delta // 2 + 2 * np.arange(32)])


def test_evenly_spaced():
    assert evenly_spaced(64, 3) == [0, 32, 64]
    assert evenly_spaced(85, 3) == [0, 42, 85]
    assert evenly_spaced(85, 1) == [42]
    assert evenly_spaced(-5, 2) == [0, 0]
    with pytest.raises(ValueError, match="count must be >= 1"):
        evenly_spaced(10, 0)


@pytest.mark.parametrize("bad", [(0, 8, 2), (10, 0, 2), (10, 8, 0)])
def test_bad_sampling_arguments(bad):
    with pytest.raises(ValueError, match="need num_frames, frames, stride >= 1"):
        train_indices(*bad)


def test_decord_returns_exactly_the_sampled_frames(test_videos):
    reader = open_video(test_videos["index40"])
    assert len(reader) == 40
    for seed in range(5):
        idx = train_indices(40, 8, 2, torch.Generator().manual_seed(seed))
        assert painted(read_frames(reader, idx)) == idx.tolist()
    for clip in test_indices(40, 8, 3, 4):  # spans 24: starts 0, 5, 10, 16
        assert painted(read_frames(reader, clip)) == clip.tolist()
    # any order and repeats (wrap-around) come back as asked
    order = [39, 3, 3, 17, 0, 39]
    assert painted(read_frames(reader, order)) == order


def test_short_video_decodes_with_wrap(test_videos):
    reader = open_video(test_videos["index12"])
    idx = test_indices(len(reader), 8, 2, 1)[0]
    assert painted(read_frames(reader, idx)) == [0, 2, 4, 6, 8, 10, 0, 2]
    one = open_video(test_videos["one_frame"])
    assert painted(read_frames(one, train_indices(len(one), 4, 2))) == [0, 0, 0, 0]


def test_out_of_range_indices_are_an_error(test_videos):
    reader = open_video(test_videos["index12"])
    with pytest.raises(VideoError, match=r"frame indices 0..12 outside 0..11"):
        read_frames(reader, [0, 12], test_videos["index12"])
