"""A user error ends in one line on stderr and exit code 2; ``--debug`` shows the traceback."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from nlrepro.cli import main as cli

GRID = Path(__file__).resolve().parent.parent / "experiments" / "table2a.yaml"


def one_error_line(capsys: pytest.CaptureFixture, code: int, *words: str,
                   after_progress: bool = False) -> str:
    """Assert exit code 2 and a single stderr line (no traceback) holding ``words``;
    ``after_progress``: the run's log lines may come before it, the error is the last."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    if after_progress:
        assert sum("error" in ln.lower() for ln in lines) == 1, err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("nlrepro "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_malformed_yaml_in_a_set_value(capsys):
    code = cli(["sweep", str(GRID), "--dry-run", "--set", "model.nonlocal.stages=[res3, res4"])
    one_error_line(capsys, code, "--set model.nonlocal.stages=[res3, res4", "not valid YAML")


def test_a_python_tag_in_a_set_value_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    code = cli(["sweep", str(GRID), "--dry-run", "--set",
                f"seed=!!python/object/apply:os.system ['touch {marker}']"])
    one_error_line(capsys, code, "--set seed=", "no !!python")
    assert not marker.exists()


def test_a_python_tag_in_a_grid_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"table: x\nrows: !!python/object/apply:os.system ['touch {marker}']\n")
    one_error_line(capsys, cli(["sweep", str(grid), "--dry-run"]), str(grid), "no !!python")
    assert not marker.exists()


@pytest.mark.parametrize("rows, words", [
    ("[]", ["rows must be a non-empty list", "got an empty list"]),
    ('"abc"', ["rows must be a non-empty list", "got str 'abc'"]),
    ("[[1, 2], [3]]", ["row 0 must be a mapping", "got list [1, 2]"]),
    ("[abc]", ["row 0 must be a mapping", "got str 'abc'"]),
    ("[{set: {seed: 1}}]", ["row 0 has no label"]),
    ("[{label: a, set: [1]}]", ["row 0 ('a'): set must be a mapping"]),
])
def test_grid_rows_of_the_wrong_shape_are_named(tmp_path, capsys, rows, words):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"table: x\nrows: {rows}\n")
    line = one_error_line(capsys, cli(["sweep", str(grid), "--dry-run"]), *words)
    assert "unknown keys" not in line


def test_a_grid_that_is_not_a_mapping(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("- a\n- b\n")
    one_error_line(capsys, cli(["sweep", str(grid), "--dry-run"]), "a grid must be a mapping")


def test_a_bad_later_grid_stops_the_sweep_before_any_run(tmp_path, capsys):
    """Several grids in one sweep are all validated first: a fault in the second grid
    must not leave the first grid's runs started."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: x\nrows: []\n")
    results = tmp_path / "results"
    code = cli(["sweep", str(GRID), str(bad), "--results", str(results)])
    one_error_line(capsys, code, str(bad), "rows must be a non-empty list")
    assert not results.exists() or not any(results.rglob("config.yaml"))


def test_a_list_line_that_leaves_the_data_root(tmp_path, capsys, test_videos):
    root = tmp_path / "data"
    (root / "v").mkdir(parents=True)
    shutil.copy(test_videos["index40"], root / "v" / "a.mp4")
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("v/a.mp4 0\nv/a.mp4 1\nv/a.mp4 2\nv/a.mp4 3\n")
    (root / "val.csv").write_text("v/a.mp4 0\n../../etc/passwd 1\n")
    sets = [f"data.root={root}", "data.proxy=null", "model.pretrained=null",
            "data.class_index=null", "data.cache_decoded=false", "data.num_workers=0",
            "data.batch_size=2", "trainer.max_epochs=1", "trainer.threads=1"]
    code = cli(["train", "--run-dir", str(tmp_path / "run"),
                *(arg for s in sets for arg in ("--set", s))])
    one_error_line(capsys, code, f"{root / 'val.csv'}:2", "escapes the data root",
                   after_progress=True)


def test_a_full_disk_is_one_line(tmp_path, capsys, test_videos):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(test_videos["index40"], root / "a.mp4")
    (root / "list.txt").write_text("a.mp4 0\n")
    code = cli(["check-videos", str(root / "list.txt"), "--workers", "1", "--out", "/dev/full"])
    one_error_line(capsys, code, "No space left on device", "ENOSPC",
                   "free some space")


@contextlib.contextmanager
def read_only_folder() -> Iterator[tuple[Path, str]]:
    """A folder this process cannot write to, and the error it gives: mode 0555 (EACCES);
    as root, who ignores the mode, the immutable attribute (EPERM)."""
    parent = Path(tempfile.mkdtemp(prefix="nlrepro-ro-"))
    folder = parent / "results"
    folder.mkdir()
    root = os.geteuid() == 0
    try:
        if root:
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
                pytest.skip("running as root on a file system without chattr +i")
            yield folder, "EPERM"
        else:
            os.chmod(folder, 0o555)
            yield folder, "EACCES"
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        os.chmod(folder, 0o755)
        shutil.rmtree(parent)


def test_a_read_only_results_folder_is_one_line(capsys):
    sets = ["data.proxy.num_train=16", "data.proxy.num_val=8", "data.proxy.num_test=8"]
    with read_only_folder() as (results, name):
        code = cli(["sweep", str(GRID), "--results", str(results), "--seeds", "0",
                    *(arg for s in sets for arg in ("--set", s))])
    one_error_line(capsys, code, f"cannot write {results}", name, "choose a writable folder")


def test_debug_keeps_the_traceback(capsys):
    with pytest.raises(Exception, match="not valid YAML"):
        cli(["--debug", "sweep", str(GRID), "--dry-run", "--set", "seed=[1"])
