"""Atomic writes: all or nothing, and the permissions a plain open() would give."""

import os
import stat

import pytest

from nlrepro.utils import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_and_keeps_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "table.md"
    atomic_write_text(path, "old\n")
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]  # no temp file left


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "kept\n")
    with pytest.raises(TypeError):
        atomic_write_json(path, {1j: "complex keys are not JSON"})
    assert path.read_text() == "kept\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
