"""The proxy's validity test on the claims card: each NL row of Table 2a ≥ C2D + margin."""

from pathlib import Path

import pandas as pd
import pytest

from nlrepro.errors import ConfigError
from nlrepro.report.claims import Runs, render
from nlrepro.report.rows import RowRef
from nlrepro.report.validity import check, load_validity
from nlrepro.sweep.grid import expand, grid_path, load_grid
from helpers.runs import runs_of

NL_ROWS = ["2a/Gaussian/50", "2a/Gaussian, embed/50", "2a/dot-product/50",
           "2a/concatenation/50"]


def table2a(concat: list[float]) -> pd.DataFrame:
    rows = {"2a/C2D baseline/50": [56.0, 55.0, 56.0]}
    rows.update({r: [76.0, 75.0, 77.0] for r in NL_ROWS[:3]})
    rows["2a/concatenation/50"] = concat
    return runs_of(rows)


def validity(runs: pd.DataFrame, tmp_path: Path, profile: str = "proxy", seeds=None):
    pool = Runs(runs, profile, tmp_path, seeds)
    return check(pool.of, seeds, profile)


def test_every_block_learned_holds(tmp_path):
    v = validity(table2a([74.0, 73.0, 66.1]), tmp_path)
    assert v.verdict == "holds" and not v.misses
    assert "at least 10 points on every seed: **holds**" in v.to_markdown()


def test_a_dead_block_above_c2d_by_its_sign_fails_and_is_named(tmp_path):
    """The sign rule lets C1 hold here; the validity test names the dead block's seed."""
    v = validity(table2a([74.0, 55.4, 56.6]), tmp_path)
    assert v.verdict == "fails"
    assert v.misses == [("2a/concatenation/50", 1, pytest.approx(0.4)),
                        ("2a/concatenation/50", 2, pytest.approx(0.6))]
    assert "concatenation seed 1 +0.4; concatenation seed 2 +0.6" in v.to_markdown()


def test_judged_on_the_given_seeds_only(tmp_path):
    assert validity(table2a([74.0, 55.4, 70.0]), tmp_path, seeds=[0, 2]).verdict == "holds"


def test_a_row_without_a_run_is_not_run(tmp_path):
    runs = table2a([74.0, 73.0, 72.0])
    runs = runs[~((runs["row"] == "dot-product") & (runs["seed"] == 2))]
    v = validity(runs, tmp_path)
    assert v.verdict == "not run" and v.missing == ["2a/dot-product/50"]


def test_kinetics_has_no_proxy_validity_test(tmp_path):
    assert validity(table2a([74.0, 55.4, 56.6]), tmp_path, profile="kinetics") is None


def test_the_card_reports_it(tmp_path):
    results = tmp_path / "results"
    (results / "proxy").mkdir(parents=True)
    table2a([74.0, 55.4, 56.6]).assign(profile="proxy").to_csv(results / "proxy" / "runs.csv",
                                                               index=False)
    text = render("proxy", results, tmp_path / "out", plots=False)["md"].read_text()
    assert "**Proxy validity**" in text and "**fails** (concatenation seed 1 +0.4" in text


def test_the_data_file_is_checked(tmp_path):
    spec = load_validity()
    assert spec["margin"] == 10.0 and spec["rows"] == NL_ROWS
    grid = {(label, s.depth) for s in expand(load_grid(grid_path("2a")), "proxy", tmp_path)
            for label in s.labels}
    for ref in [spec["baseline"], *spec["rows"]]:
        r = RowRef.parse(ref)
        assert (r.row, r.depth) in grid, ref
    bad = tmp_path / "validity.yaml"
    bad.write_text("margin: 10\nrows: []\n")
    with pytest.raises(ConfigError, match="expected keys"):
        load_validity(bad)
