"""Video lists (PySlowFast and Kinetics CSV), class indices, exclusions, path safety."""

import json
import pytest

from nlrepro.data.annotations import (AnnotationError, ClassIndex, list_labels,
                                      load_or_create_classes, read_exclusions, read_list,
                                      split_excluded)

KINETICS_CSV = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,--33Lscn6sk,4,14,train,0
"passing American football (in game)",-5l0-Q8ZY_k,0,10,train,0
air drumming,0Pq-nD6iXzE,123,133,train,1
"""


def test_path_label_list_parses_ids_names_and_paths_with_spaces(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a/x.mp4 0\n\nb/my video.mp4 2\n/abs/ignored.mp4 1\n".replace(
        "/abs/ignored.mp4", str(tmp_path / "c" / "y.mp4")))
    recs = read_list(lst, "path_label", tmp_path, ClassIndex.numbered(3))
    assert [r.label for r in recs] == [0, 2, 1]
    assert recs[0].path == tmp_path / "a" / "x.mp4"
    assert recs[1].path == tmp_path / "b" / "my video.mp4"  # the label is the last field
    assert recs[2].path == tmp_path / "c" / "y.mp4"  # absolute paths inside the root are fine
    assert recs[0].video_id == "a/x"


def test_separator_is_configurable(tmp_path):
    lst = tmp_path / "val.csv"
    lst.write_text("a, b.mp4,abseiling\nc.mp4,zumba\n")
    classes = ClassIndex(["abseiling", "zumba"])
    recs = read_list(lst, "path_label", tmp_path, classes, separator=",")
    assert [(r.path.name, r.label) for r in recs] == [("a, b.mp4", 0), ("c.mp4", 1)]


def test_kinetics_csv_builds_the_release_layout(tmp_path):
    lst = tmp_path / "kinetics_train.csv"
    lst.write_text(KINETICS_CSV)
    classes = ClassIndex.from_labels(list_labels(lst, "kinetics_csv"))
    assert classes.names == ("abseiling", "air drumming", "passing American football (in game)")
    recs = read_list(lst, "kinetics_csv", tmp_path, classes)
    assert recs[0].path == tmp_path / "train" / "abseiling" / "--33Lscn6sk_000004_000014.mp4"
    assert recs[1].path.parent.name == "passing American football (in game)"
    assert recs[2].video_id == "0Pq-nD6iXzE_000123_000133"
    assert [r.label for r in recs] == [0, 2, 1]


def test_class_index_is_written_once_and_reused(tmp_path):
    train, val, index = tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "classes.json"
    train.write_text("a.mp4 zumba\nb.mp4 abseiling\nc.mp4 juggling\n")
    classes = load_or_create_classes(index, train, "path_label")
    assert json.loads(index.read_text()) == {"abseiling": 0, "juggling": 1, "zumba": 2}
    # A later train list with a new class must not shift the ids: the file wins.
    train.write_text("a.mp4 aardvark\nb.mp4 zumba\n")
    assert load_or_create_classes(index, train, "path_label") == classes
    val.write_text("v.mp4 zumba\n")
    assert read_list(val, "path_label", tmp_path, ClassIndex.load(index))[0].label == 2


def test_integer_labels_give_numbered_classes_and_no_file(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("a.mp4 2\nb.mp4 0\n")
    assert len(load_or_create_classes(tmp_path / "c.json", train, "path_label", num_classes=5)) == 5
    assert not (tmp_path / "c.json").exists()
    assert ClassIndex.from_labels(["3", "0", "1"]).names == ("0", "1", "2", "3")
    assert len(ClassIndex.from_labels(["3", "0"], num_classes=400)) == 400


@pytest.mark.parametrize("content, line, words", [
    ("a.mp4 0\nno_label_here\n", 2, "expected '<path> <label>'"),
    ("a.mp4 0\nb.mp4 7\n", 2, "label id 7 is outside the class count: valid ids 0..2"),
    ("a.mp4 0\n\nb.mp4 -1\n", 3, "label id -1 is outside"),
    ("a.mp4 dancing\n", 1, "unknown label 'dancing'"),
    ("a.mp4 1\n../../etc/passwd 0\n", 2, "escapes the data root"),
    ("sub/../../x.mp4 0\n", 1, "escapes the data root"),
    ("/etc/passwd 0\n", 1, "escapes the data root"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, line, words):
    lst = tmp_path / "train.csv"
    lst.write_text(content)
    with pytest.raises(AnnotationError) as err:
        read_list(lst, "path_label", tmp_path / "root", ClassIndex.numbered(3))
    assert f"{lst}:{line}:" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("content, line, words", [
    ("youtube_id,time_start,time_end,split\nx,0,10,train\n", 1, "lacks the columns ['label']"),
    ("label,youtube_id,time_start,time_end,split\nzumba,x,0,10\n", 2, "expected 5 fields"),
    ("label,youtube_id,time_start,time_end,split\nzumba,x,zero,10,train\n", 2,
     "time_start must be a whole number"),
    ("label,youtube_id,time_start,time_end,split\nzumba,x,0,10,train\nsalsa,y,0,10,train\n", 3,
     "unknown label 'salsa'"),
    ("label,youtube_id,time_start,time_end,split\nzumba,x,0,10,../..\n", 2, "escapes the data root"),
])
def test_bad_kinetics_rows_name_file_and_line(tmp_path, content, line, words):
    lst = tmp_path / "val.csv"
    lst.write_text(content)
    with pytest.raises(AnnotationError) as err:
        read_list(lst, "kinetics_csv", tmp_path, ClassIndex(["zumba"]))
    assert f"{lst}:{line}:" in str(err.value) and words in str(err.value)


def test_unknown_format_and_missing_file_are_clear(tmp_path):
    with pytest.raises(AnnotationError, match=r"'csv' is not valid; choose one of \['path_label', "
                                              r"'kinetics_csv'\]"):
        read_list(tmp_path / "x", "csv", tmp_path, None)
    with pytest.raises(AnnotationError, match="nope.csv: cannot read the list"):
        read_list(tmp_path / "nope.csv", "path_label", tmp_path, None)


def test_corrupt_class_index_is_refused(tmp_path):
    bad = tmp_path / "classes.json"
    bad.write_text(json.dumps({"a": 0, "b": 2}))
    with pytest.raises(AnnotationError, match="ids 0..K-1 exactly once"):
        ClassIndex.load(bad)


def test_exclusions_are_split_off_and_counted(tmp_path):
    lst, bad = tmp_path / "train.csv", tmp_path / "bad.txt"
    lst.write_text("a.mp4 0\nb.mp4 1\nsub/c.mp4 0\n")
    bad.write_text("# a comment\nb.mp4\tbad\tmissing file\n# sub/c.mp4\tshort\t3 frames\n\n")
    recs = read_list(lst, "path_label", tmp_path, ClassIndex.numbered(2))
    excluded = read_exclusions(bad, tmp_path)
    assert excluded == {tmp_path / "b.mp4": "bad: missing file"}
    kept, gone = split_excluded(recs, excluded)
    assert [r.path.name for r in kept] == ["a.mp4", "c.mp4"] and [r.path.name for r in gone] == ["b.mp4"]
    bad.write_text("../x.mp4\tbad\tmissing\n")
    with pytest.raises(AnnotationError, match=f"{bad}:1: .*escapes"):
        read_exclusions(bad, tmp_path)


def test_symlinked_folders_inside_the_root_are_allowed(tmp_path):
    elsewhere = tmp_path / "disk2"
    elsewhere.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "train").symlink_to(elsewhere)
    lst = root / "train.csv"
    lst.write_text("train/a.mp4 0\n")
    assert read_list(lst, "path_label", root, None)[0].path == root / "train" / "a.mp4"
    # ...while a symlink does not make ``..`` acceptable.
    lst.write_text("train/../../disk2/a.mp4 0\n")
    with pytest.raises(AnnotationError, match="escapes"):
        read_list(lst, "path_label", root, None)
