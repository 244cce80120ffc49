"""On a fresh clone (no finished run under RESULTS) the notebook shows the committed example
runs instead of stopping; its loading cell, run in-process."""

from __future__ import annotations

from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_falls_back_to_the_example_results(tmp_path, capsys):
    nb = jupytext.read(ROOT / "notebooks" / "analysis.py")
    parameters, load = [c.source for c in nb.cells if c.cell_type == "code"][:2]
    namespace: dict = {}
    exec(parameters, namespace)
    namespace["RESULTS"] = str(tmp_path / "empty")  # what results/ is on a fresh clone
    exec(load, namespace)
    out = capsys.readouterr().out
    assert f"no finished run in {tmp_path / 'empty' / 'proxy'} yet" in out
    assert "15 finished runs" in out and "example results" in out
    assert namespace["results"] == ROOT / "tests" / "fixtures" / "results"
    assert len(namespace["runs"]) == 15 and set(namespace["runs"]["table"]) == {"2a"}
    assert not (tmp_path / "empty").exists()
