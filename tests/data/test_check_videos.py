"""``nlrepro check-videos``: every kind of broken file is reported, and the report excludes them."""

import shutil
from pathlib import Path

import pytest

from helpers.videos import BROKEN_KINDS
from nlrepro.cli import main as cli
from nlrepro.config import DataConfig
from nlrepro.data.annotations import ClassIndex, read_exclusions, read_list
from nlrepro.data.check import check_list, check_video
from nlrepro.data.video import VideoDataset

EXPECTED = {
    "missing": ("bad", "missing file"),
    "empty": ("bad", "empty file (0 bytes)"),
    "truncated": ("bad", "not a readable video container"),
    "truncated_faststart": ("bad", "undecodable video data"),
    "text": ("bad", "not a readable video container"),
    "zero_frames": ("bad", "no video stream"),
    "one_frame": ("short", "1 frame < clip span 16; usable (indices wrap)"),
    "index12": ("short", "12 frames < clip span 16"),
    "index40": ("ok", ""),
}


@pytest.fixture
def dataset(tmp_path, test_videos) -> tuple[Path, Path]:
    """A data root holding every test video under videos/, and its list."""
    (tmp_path / "videos").mkdir()
    for path in test_videos.values():
        if path.exists():
            shutil.copy(path, tmp_path / "videos" / path.name)
    lst = tmp_path / "train.csv"
    lst.write_text("".join(f"videos/{name}.mp4 0\n" for name in EXPECTED))
    return tmp_path, lst


def test_every_kind_of_file_gets_its_status_and_reason(dataset):
    root, lst = dataset
    results = check_list(lst, root, span=16, progress=False)
    assert [r.path for r in results] == [f"videos/{n}.mp4" for n in EXPECTED]
    for r, (name, (status, reason)) in zip(results, EXPECTED.items()):
        assert r.status == status, (name, r)
        assert r.reason.startswith(reason), (name, r.reason)
    assert [r.frames for r in results if r.status != "bad"] == [1, 12, 40]
    assert set(EXPECTED) >= set(BROKEN_KINDS)  # the table covers every broken kind


def test_check_video_decodes_first_last_and_random_frames(test_videos):
    assert check_video(test_videos["index40"], span=64, random_frames=5) == \
        ("short", "40 frames < clip span 64; usable (indices wrap)", 40)
    assert check_video(test_videos["index40"], span=40) == ("ok", "", 40)


def test_cli_writes_an_exclusion_list_the_dataset_uses(dataset, capsys):
    root, lst = dataset
    out = root / "bad.txt"
    # This process has decoded a frame: workers forked from it would hang in decord.
    assert check_video(root / "videos" / "index40.mp4")[0] == "short"
    code = cli(["check-videos", str(lst), "--workers", "2", "--span", "16", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "checked 9 videos" in printed and "1 ok, 2 short" in printed and "6 bad" in printed
    assert "2  not a readable video container" in printed
    text = out.read_text()
    assert "# videos/index12.mp4\tshort\t" in text  # documented, not excluded
    excluded = read_exclusions(out, root)
    assert set(excluded) == {root / "videos" / f"{n}.mp4" for n in BROKEN_KINDS}
    assert excluded[root / "videos" / "empty.mp4"] == "bad: empty file (0 bytes)"

    records = read_list(lst, "path_label", root, ClassIndex.numbered(1))
    ds = VideoDataset(records, DataConfig(exclude="bad.txt"), "train", excluded)
    assert ds.excluded == len(BROKEN_KINDS) and ds.num_videos == 3


def test_cli_strict_mode_and_bad_lists(dataset, capsys):
    root, lst = dataset
    assert cli(["check-videos", str(lst), "--root", str(root), "--workers", "1", "--strict"]) == 1
    lst.write_text("videos/index40.mp4 0\n../escape.mp4 0\n")
    assert cli(["check-videos", str(lst), "--workers", "1"]) == 2
    assert f"{lst}:2: path '../escape.mp4' escapes the data root" in capsys.readouterr().err
