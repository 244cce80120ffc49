"""Table rendering: paper beside ours, mean ± std, deltas, missing runs as —."""

from pathlib import Path

import pandas as pd
import pytest

from nlrepro.sweep import expand, grid_path, load_grid
from nlrepro.report.tables import DASH, build_table, display_frame, load_paper, to_markdown


def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for label, tops in values.items():
        for seed, top1 in enumerate(tops):
            rows.append({"table": "2a", "row": label, "depth": 50, "seed": seed,
                         "top1_video": top1, "top5_video": min(100.0, top1 + 30),
                         "videos": 500, "videos_failed": 0})
    return pd.DataFrame(rows)


@pytest.fixture
def specs(tmp_path):
    return expand(load_grid(grid_path("2a")), "proxy", tmp_path)


def test_build_table_statistics_and_deltas(specs):
    grid = load_grid(grid_path("2a"))
    runs = _runs({"C2D baseline": [40.0, 50.0, 60.0], "Gaussian": [70.0, 80.0],
                  "dot-product": [55.0, 65.0, 75.0]})
    df = build_table(grid, runs, load_paper(), specs).set_index("row")
    assert df.loc["C2D baseline", "top1_mean"] == pytest.approx(50.0)
    assert df.loc["C2D baseline", "top1_std"] == pytest.approx(10.0)      # sample std
    assert df.loc["Gaussian", "n"] == 2 and df.loc["Gaussian", "expected"] == 3
    assert df.loc["Gaussian", "delta"] == pytest.approx(25.0)
    assert df.loc["Gaussian", "paper_delta"] == pytest.approx(72.5 - 71.8)
    assert df.loc["concatenation", "n"] == 0
    assert pd.isna(df.loc["concatenation", "top1_mean"])


def test_runs_of_an_older_config_are_not_averaged_in(specs):
    """After a profile change both configs' runs carry the same labels: only today's count."""
    grid = load_grid(grid_path("2a"))
    today = {s.seed: s.run_id for s in specs if s.labels[0] == "C2D baseline"}
    old = _runs({"C2D baseline": [10.0, 10.0, 10.0]}).assign(run_id="0ld0ld0ld0ld")
    new = _runs({"C2D baseline": [40.0, 50.0]})
    new["run_id"] = [today[seed] for seed in new["seed"]]
    df = build_table(grid, pd.concat([old, new]), load_paper(), specs).set_index("row")
    assert df.loc["C2D baseline", "n"] == 2
    assert df.loc["C2D baseline", "top1_mean"] == pytest.approx(45.0)
    # Only results of other configs (copied fixtures): taken by their labels.
    df = build_table(grid, old, load_paper(), specs).set_index("row")
    assert df.loc["C2D baseline", "n"] == 3


def test_curves_take_the_runs_the_table_counts(specs):
    """The training-curve plot gets today's runs of a row, not an older config's as well."""
    from nlrepro.report.tables import current_runs

    today = {s.seed: s.run_id for s in specs if s.labels[0] == "C2D baseline"}
    old = _runs({"C2D baseline": [10.0, 10.0, 10.0], "Gaussian": [20.0]}).assign(
        run_id="0ld0ld0ld0ld")
    new = _runs({"C2D baseline": [40.0, 50.0]})
    new["run_id"] = [today[seed] for seed in new["seed"]]
    kept = current_runs(pd.concat([old, new]), specs)
    assert sorted(kept[kept["row"] == "C2D baseline"]["top1_video"]) == [40.0, 50.0]
    # A row with no run of today's config keeps its runs, as in the table.
    assert list(kept[kept["row"] == "Gaussian"]["top1_video"]) == [20.0]


def test_missing_rows_render_as_dash_not_zero(specs):
    grid = load_grid(grid_path("2a"))
    df = build_table(grid, _runs({"C2D baseline": [50.0]}), load_paper(), specs)
    shown = display_frame(df, cost=False).set_index("model")
    assert shown.loc["concatenation", "ours top-1"] == DASH
    assert shown.loc["concatenation", "n"] == "0/3"
    assert shown.loc["Gaussian", "paper top-1"] == "72.5"
    md = to_markdown("T", shown.reset_index(), ["note"])
    assert "0.0" not in md.split("concatenation")[1].split("\n")[0]


def test_plots_are_deterministic(tmp_path):
    """Same results, same PNG bytes (seaborn's jitter is random unless seeded)."""
    from pathlib import Path

    from nlrepro.report.collect import collect
    from nlrepro.report.tables import render

    fixtures = Path(__file__).parent.parent / "fixtures" / "results"
    results = tmp_path / "results"
    import shutil
    shutil.copytree(fixtures, results)
    collect(results, "proxy").to_csv(results / "proxy" / "runs.csv", index=False)
    a = render("2a", "proxy", results, tmp_path / "a")["png"].read_bytes()
    b = render("2a", "proxy", results, tmp_path / "b")["png"].read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b


def test_one_table_command_renders_several_tables(tmp_path):
    """``make tables`` renders all seven in one process: each table gets its own files."""
    import shutil

    from nlrepro.cli import main
    from nlrepro.report.collect import collect

    fixtures = Path(__file__).parent.parent / "fixtures" / "results"
    results = tmp_path / "results"
    shutil.copytree(fixtures, results)
    (results / "proxy" / "runs.csv").write_text(collect(results, "proxy").to_csv(index=False))
    out = tmp_path / "out"
    assert main(["table", "2a", "2b", "--profile", "proxy", "--results", str(results),
                 "--out", str(out), "--no-plots"]) == 0
    assert "3/3" in (out / "table2a.md").read_text()
    assert "Missing runs: 15 of 15" in (out / "table2b.md").read_text()  # no 2b fixtures


def test_collect_gives_top1_per_relation_kind(tmp_path):
    """On the relations proxy, runs.csv holds top-1 per relation kind, read from each run's
    per-video results and the kinds the generator drew; CueMatch runs have no such columns."""
    import json
    import shutil

    import pandas as pd

    from nlrepro.config import ProxyConfig
    from nlrepro.proxy.dataset import make_proxy_data
    from nlrepro.proxy.truth import test_kinds
    from nlrepro.report.collect import KIND_COLUMNS, collect
    from nlrepro.run import rundir

    fixtures = Path(__file__).parent.parent / "fixtures" / "results"
    assert not set(KIND_COLUMNS) & set(collect(fixtures, "proxy").columns)
    root = make_proxy_data(tmp_path / "rel", ProxyConfig(
        task="relations", num_train=2, num_val=2, num_test=12, seed=1, cue_size=8),
        progress=False)
    kinds = [k for k, shown in test_kinds(root)]
    assert len(kinds) == 12 and "time" in kinds and all(s for _, s in test_kinds(root))
    run = tmp_path / "results" / "relations" / "2a" / "abc"
    shutil.copytree(next((fixtures / "proxy" / "2a").iterdir()), run)
    summary = json.loads((run / rundir.SUMMARY).read_text())
    summary["config"]["data"]["root"] = str(root)
    (run / rundir.SUMMARY).write_text(json.dumps(summary))
    labels = [int(line.split()[1]) for line in (root / "test.csv").read_text().splitlines()]
    # Right on every "time" video, wrong on every other one.
    top1 = [y if k == "time" else (y + 1) % 4 for y, k in zip(labels, kinds)]
    pd.DataFrame({"video_idx": range(12), "label": labels, "views": 1, "failed": 0,
                  "top1": top1, "p_label": 0.5}).to_csv(run / rundir.TEST_VIDEOS, index=False)
    row = collect(tmp_path / "results", "relations").iloc[0]
    assert row["top1_time"] == 100.0
    assert all(row[f"top1_{k}"] == 0.0 for k in set(kinds) - {"time"})
    assert row["top1_inview"] == 100.0 * kinds.count("time") / 12


def test_top1_in_view_leaves_out_the_clips_whose_events_a_short_clip_cannot_show(tmp_path):
    """The timeline task: an 8-frame clip shows nothing of the early and far kinds' cues, so
    top-1 over the clips in view (what "at ceiling" is judged on) leaves them out."""
    import json
    import shutil

    import pandas as pd

    from nlrepro.config import ProxyConfig
    from nlrepro.proxy.dataset import make_proxy_data
    from nlrepro.proxy.timeline import BEFORE
    from nlrepro.proxy.truth import test_kinds
    from nlrepro.report.collect import collect
    from nlrepro.run import rundir

    fixtures = Path(__file__).parent.parent / "fixtures" / "results"
    root = make_proxy_data(tmp_path / "tl", ProxyConfig(
        task="timeline", num_train=2, num_val=2, num_test=40, seed=3, cue_size=8),
        progress=False)
    kinds = test_kinds(root)
    assert {k for k, shown in kinds if not shown} == set(BEFORE)
    run = tmp_path / "results" / "timeline" / "2a" / "abc"
    shutil.copytree(next((fixtures / "proxy" / "2a").iterdir()), run)
    summary = json.loads((run / rundir.SUMMARY).read_text())
    summary["config"]["data"]["root"] = str(root)
    (run / rundir.SUMMARY).write_text(json.dumps(summary))
    labels = [int(line.split()[1]) for line in (root / "test.csv").read_text().splitlines()]
    # Right on every clip in view, wrong on the others.
    top1 = [y if shown else (y + 1) % 4 for y, (_, shown) in zip(labels, kinds)]
    pd.DataFrame({"video_idx": range(40), "label": labels, "views": 1, "failed": 0,
                  "top1": top1, "p_label": 0.5}).to_csv(run / rundir.TEST_VIDEOS, index=False)
    row = collect(tmp_path / "results", "timeline").iloc[0]
    assert row["top1_inview"] == 100.0
    assert all(row[f"top1_{k}"] == 0.0 for k in BEFORE)


def test_the_table_shows_top1_per_kind_only_where_every_kind_is_known():
    import pandas as pd

    from nlrepro.report.collect import KIND_COLUMNS
    from nlrepro.report.tables import KIND_HEADER, display_frame

    base = {"row": "C2D baseline", "depth": 50, "baseline": True, "paper_top1": 71.8,
            "paper_top5": 89.7, "top1_mean": 60.0, "top1_std": 1.0, "top5_mean": 100.0,
            "top5_std": 0.0, "paper_delta": None, "delta": None, "n": 3, "expected": 3}
    kinds = dict(zip(KIND_COLUMNS, (61.6, 86.9, 48.8, 51.0)))
    header = KIND_HEADER + "time / space / spacetime / chain"
    shown = display_frame(pd.DataFrame([{**base, **kinds}]), cost=False)
    assert shown[header].tolist() == ["62 / 87 / 49 / 51"]
    assert not any(c.startswith(KIND_HEADER)
                   for c in display_frame(pd.DataFrame([base]), cost=False).columns)
    six = dict(zip(KIND_COLUMNS, (61.6, 86.9, 48.8, 51.0, 25.0, 50.0)))
    shown = display_frame(pd.DataFrame([{**base, **six}]), cost=False)
    assert shown[header + " / early / far"].tolist() == ["62 / 87 / 49 / 51 / 25 / 50"]
