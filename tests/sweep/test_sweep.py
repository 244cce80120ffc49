"""Grids expand to the paper's rows; run ids are stable; states and reuse work."""

import json
from pathlib import Path

import pandas as pd
import pytest

from nlrepro.config import ConfigError
from nlrepro.sweep import expand, grid_path, load_grid, reuse_done_twin, write_spec
from nlrepro.report.tables import PAPER_CSV

TABLES = ["2a", "2b", "2c", "2d", "2e", "2f", "2g"]


@pytest.mark.parametrize("profile", ["proxy", "kinetics"])
def test_every_paper_row_has_exactly_one_grid_row(profile, tmp_path):
    paper = pd.read_csv(PAPER_CSV, dtype={"table": str})
    for table in TABLES:
        specs = expand(load_grid(grid_path(table)), profile, tmp_path)
        ours = {(label, s.depth) for s in specs for label in s.labels}
        theirs = set(zip(paper.loc[paper.table == table, "row"],
                         paper.loc[paper.table == table, "depth"]))
        assert ours == theirs, table


def test_grid_rows_match_the_paper_axes(tmp_path):
    """The config each grid row builds has the arch/instantiation/blocks/scope/frames of the CSV."""
    paper = pd.read_csv(PAPER_CSV, dtype={"table": str, "instantiation": str, "scope": str})
    for table in TABLES:
        for s in expand(load_grid(grid_path(table)), "kinetics", tmp_path):
            p = paper[(paper.table == table) & (paper.row == s.label) & (paper.depth == s.depth)]
            p = p.iloc[0]
            m = s.config.model
            assert m.arch == p.arch, (table, s.label)
            assert int(m.nonlocal_.blocks) == int(p.blocks), (table, s.label)
            if int(p.blocks):  # scope/instantiation only mean something with NL blocks
                assert m.nonlocal_.instantiation == p.instantiation
                assert m.nonlocal_.scope == p.scope
            assert s.config.data.frames == int(p.frames), (table, s.label)


def test_expand_table2a_proxy(tmp_path):
    specs = expand(load_grid(grid_path("2a")), "proxy", tmp_path)
    assert len(specs) == 5 * 3
    assert len({s.run_id for s in specs}) == 15
    again = expand(load_grid(grid_path("2a")), "proxy", tmp_path)
    assert [s.run_dir for s in specs] == [s.run_dir for s in again]
    assert all(s.run_dir.parent == tmp_path / "proxy" / "2a" for s in specs)
    assert {s.state() for s in specs} == {"not launched"}


def test_table2g_fine_tunes_from_table2f(tmp_path):
    specs = expand(load_grid(grid_path("2g")), "proxy", tmp_path)
    parents = expand(load_grid(grid_path("2f")), "proxy", tmp_path)
    by_key = {(p.label, p.depth, p.seed): p for p in parents}
    for s in specs:
        parent = by_key[(s.label, s.depth, s.seed)]
        assert s.depends_on.run_dir == parent.run_dir
        assert s.config.trainer.init_from == str(parent.run_dir / "checkpoints" / "last.ckpt")
        assert s.config.data.frames == 4 * parent.config.data.frames


def test_states_and_reuse_of_a_done_twin(tmp_path):
    a = expand(load_grid(grid_path("2a")), "proxy", tmp_path)[0]   # C2D baseline, seed 0
    b = next(s for s in expand(load_grid(grid_path("2b")), "proxy", tmp_path)
             if s.label == "baseline" and s.seed == 0)
    assert a.run_id == b.run_id and a.run_dir != b.run_dir
    write_spec(a)
    assert a.state() == "not launched"
    (a.run_dir / "checkpoints").mkdir()
    assert a.state() == "incomplete"
    (a.run_dir / "error.txt").write_text("Traceback...\nRuntimeError: boom\n")
    assert a.error() == "RuntimeError: boom"
    assert not reuse_done_twin(b, tmp_path)
    (a.run_dir / "summary.json").write_text(json.dumps({"metrics": {"test/top1_video": 50.0}}))
    (a.run_dir / "done").write_text("")
    assert a.state() == "done"
    assert reuse_done_twin(b, tmp_path) and b.state() == "done"
    assert json.loads((b.run_dir / "summary.json").read_text())["reused_from"] == str(a.run_dir)
    assert json.loads((b.run_dir / "row.json").read_text())["labels"] == ["baseline"]


def test_bad_grid_and_bad_row_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: x\nrows:\n  - {label: a, set: {model.nonlocal.scope: global}}\n")
    with pytest.raises(ConfigError, match="row 'a'.*'global'.*spacetime"):
        expand(load_grid(bad), "proxy", tmp_path)
    bad.write_text("table: x\nrowz: []\n")
    with pytest.raises(ConfigError, match="rowz"):
        load_grid(bad)
    with pytest.raises(ConfigError, match="unknown table '2z'"):
        grid_path("2z")


def _finish(spec, ckpt: bytes | None) -> None:
    """Mark a run done the way a finished training leaves it."""
    write_spec(spec)
    if ckpt is not None:
        (spec.run_dir / "checkpoints").mkdir(exist_ok=True)
        (spec.run_dir / "checkpoints" / "last.ckpt").write_bytes(ckpt)
    (spec.run_dir / "summary.json").write_text(json.dumps({"metrics": {}}))
    (spec.run_dir / "done").write_text("")


def test_a_reused_run_is_a_full_parent_for_table2g(tmp_path):
    """2a first, then 2f, then 2g: 2f's C2D rows are 2a's twins, and 2g fine-tunes from them."""
    c2d_2a = next(s for s in expand(load_grid(grid_path("2a")), "proxy", tmp_path)
                  if s.label == "C2D baseline" and s.seed == 0)
    _finish(c2d_2a, b"weights of the 2a run")
    c2d_2f = next(s for s in expand(load_grid(grid_path("2f")), "proxy", tmp_path)
                  if s.label == "C2D baseline" and s.depth == 50 and s.seed == 0)
    assert c2d_2f.run_id == c2d_2a.run_id
    assert reuse_done_twin(c2d_2f, tmp_path)
    child = next(s for s in expand(load_grid(grid_path("2g")), "proxy", tmp_path)
                 if s.depends_on and s.depends_on.run_dir == c2d_2f.run_dir)
    assert Path(child.config.trainer.init_from).read_bytes() == b"weights of the 2a run"


def test_a_run_reused_without_its_checkpoint_gets_it_on_the_next_sweep(tmp_path):
    """Folders reused by an older version (summary, no checkpoint) are mended, not retrained."""
    a = expand(load_grid(grid_path("2a")), "proxy", tmp_path)[0]
    b = next(s for s in expand(load_grid(grid_path("2b")), "proxy", tmp_path)
             if s.label == "baseline" and s.seed == 0)
    _finish(a, b"ckpt")
    write_spec(b)
    (b.run_dir / "summary.json").write_text(json.dumps({"reused_from": str(a.run_dir)}))
    (b.run_dir / "done").write_text("")
    assert not (b.run_dir / "checkpoints" / "last.ckpt").exists()
    assert reuse_done_twin(b, tmp_path)
    assert (b.run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"ckpt"
