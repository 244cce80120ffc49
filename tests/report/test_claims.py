"""The claims scorecard: every verdict rule on hand-made runs, the data file, the golden card."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from nlrepro.report.claims import (CLAIMS_YAML, Runs, RowRef, evaluate, judge, load_claims, render,
                            worst)
from nlrepro.errors import ConfigError
from nlrepro.info import model_info
from nlrepro.report.collect import collect
from nlrepro.report.tables import load_paper
from nlrepro.sweep.grid import expand, grid_path, load_grid
from helpers.runs import runs_of

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPECTED = FIXTURES / "expected" / "claims.md"


def verdict(claim_id: str, rows: dict[str, list[float]], tmp_path: Path) -> str:
    claim = next(c for c in load_claims() if c["id"] == claim_id)
    return evaluate(claim, Runs(runs_of(rows), "proxy", tmp_path), load_paper()).verdict


@pytest.mark.parametrize("diffs, a, b, expected", [
    ([1.0, 2.0, 0.5], 60, 59, "holds"),
    ([-1.0, -2.0, 0.5], 58, 59, "fails"),
    ([3.0, -1.0, 0.5], 60, 59, "unresolved"),
    ([0.0, 0.0, 0.0], 60, 60, "unresolved"),       # a tie is not the claimed sign
    ([0.0, 0.5, -0.2], 99.4, 99.2, "at ceiling"),
    ([-0.6, -0.6, -0.6], 99.4, 100.0, "at ceiling"),  # both saturated: not a failure
    ([], None, None, "not run"),
])
def test_judge_each_rule(diffs, a, b, expected):
    assert judge(pd.Series(diffs, dtype=float), a, b) == expected


def test_a_claim_takes_its_worst_comparison():
    assert worst(["holds", "unresolved", "holds"]) == "unresolved"
    assert worst(["holds", "at ceiling"]) == "at ceiling"
    assert worst(["at ceiling", "not run"]) == "not run"
    assert worst(["not run", "fails", "holds"]) == "fails"


def test_claim_that_holds_and_one_that_fails(tmp_path):
    assert verdict("C8", {"2c/baseline/101": [55, 53, 54], "2c/baseline/50": [50, 52, 49]},
                   tmp_path) == "holds"
    # The committed proxy's finding: C2D R101 below C2D R50.
    assert verdict("C8", {"2c/baseline/101": [46.6, 47.0, 46.8], "2c/baseline/50": [55, 49, 46]},
                   tmp_path) == "fails"


def test_claim_at_ceiling_and_not_run(tmp_path):
    full = {"2c/1-block/50": [100, 100, 99.8], "2c/5-block/50": [100, 100, 100],
            "2c/10-block/50": [100, 99.6, 100]}
    assert verdict("C5", full, tmp_path) == "at ceiling"
    del full["2c/10-block/50"]
    assert verdict("C5", full, tmp_path) == "not run"


def test_the_ceiling_is_judged_on_the_clips_in_view_where_runs_record_them(tmp_path):
    """Timeline proxy: short clips cannot show the early and far kinds, so two rows at 81% of
    all clips can be at 100% of the clips they show: a tie there is the task's ceiling, not a
    finding; the difference of all-clip top-1 still decides the other verdicts."""
    claim = next(c for c in load_claims() if c["id"] == "C8")
    rows = runs_of({"2c/baseline/101": [81.2, 80.8, 81.0], "2c/baseline/50": [81.0, 81.0, 80.6]})
    assert evaluate(claim, Runs(rows, "proxy", tmp_path), load_paper()).verdict == "unresolved"
    rows["top1_inview"] = [100.0, 99.6, 100.0, 100.0, 100.0, 99.8]
    assert evaluate(claim, Runs(rows, "proxy", tmp_path), load_paper()).verdict == "at ceiling"
    rows["top1_inview"] = [90.0, 91.0, 92.0, 80.0, 81.0, 82.0]
    assert evaluate(claim, Runs(rows, "proxy", tmp_path), load_paper()).verdict == "unresolved"


def test_a_longer_clip_that_shows_more_is_not_at_ceiling_against_a_shorter_one(tmp_path):
    """2g against 2f: both can be at 100% of what they show, but the long clip shows more (the
    timeline's early kind), so its gain over all clips is a finding, not a tie."""
    claim = next(c for c in load_claims() if c["id"] == "C15")
    rows, full = {}, []
    for row in ("C2D baseline", "I3D", "NL I3D"):
        for depth in (50, 101):
            rows[f"2g/{row}/{depth}"] = [99.0, 99.4, 99.2]
            rows[f"2f/{row}/{depth}"] = [81.0, 80.6, 81.2]
    frame = runs_of(rows)
    frame["top1_inview"] = 100.0
    frame["frames"] = [32 if t == "2g" else 8 for t in frame["table"]]
    assert evaluate(claim, Runs(frame, "proxy", tmp_path), load_paper()).verdict == "holds"
    frame["frames"] = 8  # as if both read the same clips: a tie at the ceiling
    assert evaluate(claim, Runs(frame, "proxy", tmp_path), load_paper()).verdict == "at ceiling"


def test_comparisons_are_paired_by_seed(tmp_path):
    """Seed 0 is missing on one side: only the seeds both rows ran are compared."""
    rows = runs_of({"2c/baseline/101": [40, 60, 61], "2c/baseline/50": [90, 50, 50]})
    rows = rows[~((rows["depth"] == 101) & (rows["seed"] == 0))]
    claim = next(c for c in load_claims() if c["id"] == "C8")
    result = evaluate(claim, Runs(rows, "proxy", tmp_path), load_paper())
    (comp,) = result.comparisons
    assert list(comp.diffs.index) == [1, 2] and list(comp.diffs) == [10, 11]
    assert result.verdict == "holds" and comp.paper == pytest.approx(73.1 - 71.8)


def test_alike_rule(tmp_path):
    base = {"2a/C2D baseline/50": [50, 50, 50]}
    names = ["2a/Gaussian/50", "2a/Gaussian, embed/50", "2a/dot-product/50",
             "2a/concatenation/50"]
    alike = {**base, **{n: [80 + i, 81, 80] for i, n in enumerate(names)}}
    assert verdict("C2", alike, tmp_path) == "holds"            # spread 3 < gain 30
    apart = {**base, **{n: [55 + 10 * i] * 3 for i, n in enumerate(names)}}
    assert verdict("C2", apart, tmp_path) == "fails"            # spread 30 > gain 5
    top = {**base, **{n: [100, 99.8, 100] for n in names}}
    assert verdict("C2", top, tmp_path) == "at ceiling"


def test_flops_rule_uses_our_networks(tmp_path):
    """C12 needs NL C2D to cost fewer multiply-adds than each I3D, whatever the accuracies."""
    rows = {"2e/NL C2D, 5-block/101": [90, 91, 92], "2e/I3D 3x3x3/101": [80, 80, 80],
            "2e/I3D 3x1x1/101": [80, 80, 80]}
    specs = expand(load_grid(grid_path("2e")), "proxy", tmp_path)
    gflops = {s.labels[0]: model_info(s.config)["gflops"] for s in specs if s.seed == 0}
    cheaper = gflops["NL C2D, 5-block"] < min(gflops["I3D 3x3x3"], gflops["I3D 3x1x1"])
    assert verdict("C12", rows, tmp_path) == ("holds" if cheaper else "fails")
    rows["2e/I3D 3x1x1/101"] = [95, 95, 95]
    assert verdict("C12", rows, tmp_path) == "fails"


def test_claims_file_names_real_rows(tmp_path):
    claims = load_claims()
    assert [c["id"] for c in claims] == [f"C{i}" for i in range(1, 16)]
    bad = tmp_path / "claims.yaml"
    bad.write_text("- {id: X, table: 2c, claim: c, compare: [[2c/11-block/50, 2c/baseline/50]]}\n")
    with pytest.raises(ConfigError, match="no paper row 2c 11-block R50.*10-block"):
        load_claims(bad)
    bad.write_text("- {id: X, table: 2c, claim: c, rule: mostly}\n")
    with pytest.raises(ConfigError, match="rule 'mostly'.*alike"):
        load_claims(bad)
    assert CLAIMS_YAML.parent.name == "paper_tables"


def test_scorecard_renders_exactly_the_committed_fixture_card(tmp_path):
    """Committed miniature runs (the Table 2a fixtures) -> the scorecard, byte for byte."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", results)
    df = collect(results, "proxy")
    (results / "proxy" / "runs.csv").write_text(df.to_csv(index=False))
    paths = render("proxy", results, tmp_path / "out", plots=True)
    text = paths["md"].read_text()
    if os.environ.get("NLREPRO_UPDATE_GOLDEN"):
        EXPECTED.write_text(text)
    assert text == EXPECTED.read_text()
    assert paths["png"].stat().st_size > 10_000
    long = pd.read_csv(paths["csv"])
    assert set(long["id"]) == {f"C{i}" for i in range(1, 16)}
    judged = long[long["verdict"] != "not run"]
    assert set(judged["id"]) == {"C1", "C2"}
    assert all(len(ids.split()) >= 2 for ids in judged["run_ids"])


def test_claims_command_needs_collect_first(tmp_path):
    with pytest.raises(ConfigError, match="runs.csv not found.*nlrepro collect"):
        render("proxy", tmp_path)


def test_labels_of_close_claims_do_not_overlap():
    """Two claims with nearly the same margins (C9 and C14 on the proxy) get label places
    whose text boxes do not intersect; a lone claim keeps the first place."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from nlrepro.report.plots import LABEL_PLACES, _label_places

    run = pd.DataFrame({"id": ["C9", "C14", "C15"], "paper": [1.1, 1.1, 1.6],
                        "ours": [-3.0, -3.4, -50.0]})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(run["paper"], run["ours"])
    ax.set_xlim(0, 1.7)
    ax.set_ylim(-55, 55)
    places = _label_places(ax, run)
    plt.close(fig)
    assert places[0] == LABEL_PLACES[0] and places[2] == LABEL_PLACES[0]
    assert places[1] != places[0]


def test_held_out_seeds_are_judged_alone(tmp_path):
    """``seeds`` replaces the grids' seeds: a claim that holds on 0-2 can fail on 3-4."""
    rows = runs_of({"2c/baseline/101": [60, 61, 62, 40, 41], "2c/baseline/50": [50] * 5})
    claim = next(c for c in load_claims() if c["id"] == "C8")
    paper = load_paper()
    first = evaluate(claim, Runs(rows, "proxy", tmp_path, seeds=[0, 1, 2]), paper)
    held = evaluate(claim, Runs(rows, "proxy", tmp_path, seeds=[4, 3]), paper)
    assert list(first.comparisons[0].diffs) == [10, 11, 12] and first.verdict == "holds"
    assert list(held.comparisons[0].diffs.index) == [3, 4] and held.verdict == "fails"


def test_held_out_card_names_its_seeds(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", results)
    df = collect(results, "proxy")
    (results / "proxy" / "runs.csv").write_text(df.to_csv(index=False))
    paths = render("proxy", results, tmp_path / "held", plots=False, seeds=[8, 7, 8])
    text = paths["md"].read_text()
    assert text.startswith("# The paper's claims on the proxy runs (seeds 7, 8): 0 of 15 hold")
    assert set(pd.read_csv(paths["csv"])["verdict"]) == {"not run"}
