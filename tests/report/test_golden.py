"""Committed miniature results (15 real tiny proxy runs of Table 2a) -> the rendered table.

The fixtures under tests/fixtures/results/ came from
``nlrepro sweep experiments/table2a.yaml --results R --set data.proxy.num_train=96 ...``.
If the rendering changes on purpose, regenerate the expected file with
``NLREPRO_UPDATE_GOLDEN=1 make test PYTEST_ARGS=tests/report/test_golden.py`` and review the diff.
"""

import os
import shutil
from pathlib import Path

from nlrepro.report.collect import collect
from nlrepro.report.tables import render

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPECTED = FIXTURES / "expected" / "table2a.md"


def test_table2a_renders_exactly_the_committed_table(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "results", results)
    df = collect(results, "proxy")
    assert len(df) == 15 and set(df["seed"]) == {0, 1, 2}
    (results / "proxy" / "runs.csv").write_text(df.to_csv(index=False))
    paths = render("2a", "proxy", results, tmp_path / "out", plots=True)
    text = paths["md"].read_text()
    if os.environ.get("NLREPRO_UPDATE_GOLDEN"):
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(text)
    assert text == EXPECTED.read_text()
    assert paths["png"].stat().st_size > 10_000 and paths["curves"].is_file()
    assert paths["tex"].read_text().count("\\\\") >= 6   # header + 5 rows
