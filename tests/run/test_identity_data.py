"""The run id covers the data's content: another data root or an edited exclusion list is
another run (the ids of every table are pinned by test_identity.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers.tiny import tiny_sets, write_root

from nlrepro.config import load_config
from nlrepro.data.annotations import load_or_create_classes
from nlrepro.run.identity import config_hash


def kinetics_like(root: Path, *extra: str):
    """The kinetics profile's recipe on a tiny root (lists only: the id never reads videos)."""
    return load_config("kinetics", sets=[f"data.root={root}", "model.num_classes=4", *extra])


def lists(root: Path, val: str) -> Path:
    root.mkdir(parents=True)
    (root / "train.csv").write_text("v/a.mp4 run\nv/b.mp4 jump\nv/c.mp4 swim\nv/d.mp4 sing\n")
    (root / "val.csv").write_text(val)
    return root


def test_another_data_root_is_another_run(tmp_path):
    a = lists(tmp_path / "a", "v/a.mp4 run\n")
    b = lists(tmp_path / "b", "v/b.mp4 jump\n")
    assert config_hash(kinetics_like(a)) != config_hash(kinetics_like(b))


def test_the_same_data_in_another_folder_is_the_same_run(tmp_path):
    a = lists(tmp_path / "a", "v/a.mp4 run\n")
    shutil.copytree(a, tmp_path / "copy")
    assert config_hash(kinetics_like(a)) == config_hash(kinetics_like(tmp_path / "copy"))


def test_editing_the_exclusion_list_in_place_is_another_run(tmp_path):
    root = lists(tmp_path / "a", "v/a.mp4 run\n")
    (root / "bad.txt").write_text("v/a.mp4\tbad\tno video stream\n")
    before = config_hash(kinetics_like(root, "data.exclude=bad.txt"))
    (root / "bad.txt").write_text("v/b.mp4\tbad\tno video stream\n")
    after = config_hash(kinetics_like(root, "data.exclude=bad.txt"))
    assert before != after
    assert config_hash(load_config("proxy", sets=tiny_sets(root, "data.exclude=bad.txt"))) \
        != config_hash(load_config("proxy", sets=tiny_sets(root)))


def test_the_class_index_written_by_the_first_run_keeps_the_id(tmp_path):
    root = lists(tmp_path / "a", "v/a.mp4 run\n")
    before = config_hash(kinetics_like(root))
    load_or_create_classes(root / "classes.json", root / "train.csv", "path_label")
    assert (root / "classes.json").is_file()
    assert config_hash(kinetics_like(root)) == before
    (root / "classes.json").write_text(json.dumps({"swim": 0, "run": 1, "jump": 2, "sing": 3}))
    assert config_hash(kinetics_like(root)) != before  # another class order: another run


def test_a_tiny_real_root_trains_under_an_id_of_its_content(tmp_path, test_videos):
    one = write_root(tmp_path / "one", test_videos)
    two = write_root(tmp_path / "two", test_videos, val=["index40", "index12"])
    ids = {config_hash(load_config("proxy", sets=tiny_sets(r))) for r in (one, two)}
    assert len(ids) == 2

