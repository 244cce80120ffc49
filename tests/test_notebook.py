"""The analysis notebook runs headless on results and shows the right numbers; .py ↔ .ipynb sync.

Two result sets: the committed fixtures (15 tiny real proxy runs of Table 2a, the golden test's;
copied to a temp dir, no runs.csv so the notebook collects them itself), whose table must be
exactly the golden rendering; and synthetic runs written here the way real runs write them
(``write_spec``: config.yaml, row.json; a ``summary.json`` shaped like
``nlrepro.train._summary``, a Lightning-style ``metrics.csv``, the ``done`` marker, then
``nlrepro.collect.collect`` builds runs.csv) with known numbers over two tables.  The notebook runs
in a real Jupyter kernel (nbclient + ipykernel) started from this interpreter, in a temp
working directory, and must not write into the repository.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from nlrepro.report.collect import collect
from nlrepro.config import to_dict
from nlrepro.run.identity import config_hash
from nlrepro.sweep import expand, grid_path, load_grid, write_spec
from nlrepro.report.tables import render
from nlrepro.utils import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "notebooks" / "analysis.py"
PAIRED = ROOT / "notebooks" / "analysis.ipynb"
FIXTURES = ROOT / "tests" / "fixtures"

# top-1 per seed for each row; a missing seed is a run that did not finish.
TOP1 = {
    "2a": {"C2D baseline": [40.0, 50.0, 60.0], "Gaussian": [61.0, 63.0, 65.0],
           "Gaussian, embed": [80.0, 84.0, 88.0], "dot-product": [45.0, 47.0, 49.0],
           "concatenation": [52.0, 54.0]},
    "2b": {"baseline": [50.0, 52.0, 54.0], "res2": [51.0, 53.0, 55.0], "res3": [70.0, 72.0, 74.0],
           "res4": [78.0, 80.0, 82.0], "res5": [60.0, 61.0, 62.0]},
}
EPOCHS = 3


def _summary(spec, top1: float, run_dir: Path) -> dict:
    """What ``nlrepro.train._summary`` writes (the keys collect and the notebook read)."""
    return {
        "run_id": config_hash(spec.config), "run_dir": str(run_dir),
        "profile": spec.config.profile, "seed": spec.seed, "config": to_dict(spec.config),
        "metrics": {"test/top1_video": top1, "test/top5_video": min(100.0, top1 + 20.0),
                    "val/top1_clip": top1 / 100 - 0.05, "test/videos": 100,
                    "test/videos_failed": 0, "test/views_per_video": 1.0},
        "epochs": EPOCHS, "steps": EPOCHS * 10, "train_seconds": 30.0 + spec.seed,
        "wall_seconds_last_attempt": 35.0, "resumed": False, "throughput_clips_per_s": 200.0,
        "peak_rss_mb": 900.0, "videos": {"train_retries": 0}, "init_from": None,
        "versions": {}, "git_commit": None, "world_size": 1,
    }


def _metrics_csv(top1: float) -> pd.DataFrame:
    """Lightning CSVLogger layout: step rows with train/loss, epoch rows with val metrics."""
    rows = []
    for epoch in range(EPOCHS):
        for step in range(epoch * 10, epoch * 10 + 10, 5):
            rows.append({"epoch": epoch, "step": step, "train/loss": 1.4 - 0.1 * epoch})
        rows.append({"epoch": epoch, "step": epoch * 10 + 9,
                     "val/top1_clip": (top1 / 100) * (epoch + 1) / EPOCHS, "val/loss": 1.0})
    return pd.DataFrame(rows)


def write_results(results: Path, profile: str = "proxy") -> pd.DataFrame:
    """Finished runs for ``TOP1`` under ``results``, collected into ``<profile>/runs.csv``."""
    for table, rows in TOP1.items():
        for spec in expand(load_grid(grid_path(table)), profile, results):
            values = rows[spec.label]
            if spec.seed >= len(values):
                continue
            write_spec(spec)
            atomic_write_json(spec.run_dir / "summary.json",
                              _summary(spec, values[spec.seed], spec.run_dir))
            _metrics_csv(values[spec.seed]).to_csv(spec.run_dir / "metrics.csv", index=False)
            (spec.run_dir / "done").write_text("")
    runs = collect(results, profile)
    runs.to_csv(results / profile / "runs.csv", index=False)
    return runs


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs this interpreter, found first (JUPYTER_PATH)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (nlrepro)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


def _snapshot() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file where the notebook could write into the repository."""
    out = {}
    for folder in (ROOT / "notebooks", FIXTURES):
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                out[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return out


def execute(parameters: dict[str, str], cwd: Path) -> nbformat.NotebookNode:
    """Run the notebook from its source with papermill-style parameters after the tagged cell,
    in a kernel whose working directory is ``cwd``; the repository stays as it was."""
    nb = jupytext.read(SOURCE)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    lines = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(lines))
    before = _snapshot()
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    assert _snapshot() == before, "the notebook wrote into notebooks/ or tests/fixtures/"
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for mime in ("text/markdown", "text/plain", "text/html"):
                parts.append(str(out.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


def test_notebook_runs_headless_and_shows_the_tables(tmp_path, kernel_env):
    runs = write_results(tmp_path / "results")
    assert len(runs) == 14 + 15
    (tmp_path / "cwd").mkdir()
    nb = execute({"RESULTS": str(tmp_path / "results"), "PROFILE": "proxy"}, tmp_path / "cwd")
    text = outputs_text(nb)
    assert f"29 finished runs in {tmp_path / 'results' / 'proxy' / 'runs.csv'}" in text
    # Table 2a beside the paper: mean ± sample std of our seeds, paper's number, n, Δ.
    assert "50.0 ± 10.0" in text                       # C2D baseline (40, 50, 60)
    assert "84.0 ± 4.0" in text                        # Gaussian, embed (80, 84, 88)
    assert "+34.0" in text                             # its gain over the baseline
    assert "72.7" in text and "71.8" in text           # the paper's 2a numbers
    assert "53.0 ± 1.4" in text and "2/3" in text      # concatenation: one seed missing
    assert "80.0 ± 2.0" in text                        # Table 2b res4
    assert "Missing runs: 1 of 15" in text              # the table's footnotes are shown
    for table in TOP1:  # each table exactly as `nlrepro table` renders it
        md = render(table, "proxy", tmp_path / "results", tmp_path / "rendered", plots=False)
        assert md["md"].read_text().strip() in text
    # Every run's own config is built for its GMACs (a config the model code rejects is named,
    # not fatal: on the proxy, Table 2b's res5 block sees a 1×1 map it cannot subsample).
    failed = [line for line in text.splitlines() if "no GMACs" in line]
    assert not any(rid in line for rid in runs[runs["table"] == "2a"]["run_id"]
                   for line in failed)
    # Figures: gains scatter, axes, seed spread, 2 curve grids, compute.
    assert images(nb) >= 6
    assert not any((tmp_path / "cwd").iterdir())


def test_notebook_on_the_committed_fixture_results_shows_the_golden_table(tmp_path, kernel_env):
    """The golden test's 15 real tiny runs, without runs.csv: the notebook collects them in
    memory and shows Table 2a exactly as ``nlrepro table`` renders it (the golden file)."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", results)
    assert not (results / "proxy" / "runs.csv").exists()
    (tmp_path / "cwd").mkdir()
    nb = execute({"RESULTS": str(results)}, tmp_path / "cwd")
    text = outputs_text(nb)
    assert "15 finished runs" in text and "collected in memory" in text
    assert (FIXTURES / "expected" / "table2a.md").read_text().strip() in text
    assert "no GMACs" not in text
    assert images(nb) >= 6
    assert not (results / "proxy" / "runs.csv").exists()  # read only
    assert not any((tmp_path / "cwd").iterdir())


def test_notebook_says_what_to_do_without_results(tmp_path):
    """Its loading cell, run in-process (no kernel needed for an error message)."""
    nb = jupytext.read(SOURCE)
    parameters, load = [c.source for c in nb.cells if c.cell_type == "code"][:2]
    namespace: dict = {}
    exec(parameters, namespace)
    namespace["RESULTS"] = str(tmp_path / "empty")
    namespace["EXAMPLE_RESULTS"] = None
    with pytest.raises(FileNotFoundError, match=r"no finished run in .*`make table2a`"):
        exec(load, namespace)
    assert not (tmp_path / "empty").exists()


def test_ipynb_and_py_are_in_sync():
    """The .ipynb holds exactly the cells of the .py (``jupytext --sync`` was run)."""
    source = jupytext.read(SOURCE)
    paired = nbformat.read(PAIRED, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(paired) == cells(source), \
        "notebooks/analysis.ipynb is stale: run `jupytext --sync notebooks/analysis.py`"
    tags = [c.metadata.get("tags", []) for c in paired.cells]
    assert ["parameters"] in tags
    assert paired.metadata["kernelspec"]["name"] == "python3"


def test_collect_reads_the_written_results(tmp_path):
    """The fixture writer produces what collect expects (so the notebook test is meaningful)."""
    runs = write_results(tmp_path / "results")
    row = runs[(runs["table"] == "2a") & (runs["row"] == "Gaussian, embed")]
    assert sorted(row["top1_video"]) == [80.0, 84.0, 88.0]
    assert set(row["instantiation"]) == {"embedded_gaussian"}
    base = runs[(runs["table"] == "2b") & (runs["row"] == "baseline")]
    assert set(base["instantiation"]) == {"none"} and set(base["blocks"]) == {0}
