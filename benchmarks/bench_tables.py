"""How long all of Table 2 takes on the proxy: each table's make target from empty folders.

Opt-in (about 50 min on 2 cores for the default timeline proxy): ``python
benchmarks/bench_tables.py`` or ``python benchmarks/run_all.py --with tables``; ``--profile
NAME`` times another proxy (``tables_<name>.{csv,md}``; CueMatch, ``proxy``, writes
``tables.{csv,md}``).  In a scratch copy of the checked-out tree
(``git archive HEAD``, so nothing here is touched) with empty ``data/`` and ``results/``, it runs
what ``make table2a`` … ``make table2g`` run (sweep, collect, table) one table after the other,
then ``make claims``, timing each; then the whole of ``make tables`` again, which must launch
nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from nlrepro.choices import DEFAULT_PROFILE

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "bench"
TABLES = ("2a", "2b", "2c", "2d", "2e", "2f", "2g")
NLREPRO = [sys.executable, "-m", "nlrepro"]


def steps(table: str, profile: str) -> list[list[str]]:
    """The commands of ``make table<table>`` (Makefile), local launcher."""
    return [NLREPRO + ["sweep", f"experiments/table{table}.yaml", "--profile", profile,
                       "--launcher", "local"],
            NLREPRO + ["collect", "--profile", profile],
            NLREPRO + ["table", table, "--profile", profile]]


def claims_steps(profile: str) -> list[list[str]]:
    return [NLREPRO + ["collect", "--profile", profile],
            NLREPRO + ["claims", "--profile", profile]]


def _run(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    for cmd in commands:
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(tree: Path, profile: str) -> pd.DataFrame:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    rows = []
    for table in TABLES:
        rows.append({"pass": "first", "step": f"table{table}",
                     "seconds": _run(steps(table, profile), tree, env)})
    rows.append({"pass": "first", "step": "claims",
                 "seconds": _run(claims_steps(profile), tree, env)})
    again = ([NLREPRO + ["sweep", *(f"experiments/table{t}.yaml" for t in TABLES), "--profile",
                         profile, "--launcher", "local"],
              NLREPRO + ["collect", "--profile", profile],
              NLREPRO + ["table", *TABLES, "--profile", profile],
              NLREPRO + ["claims", "--profile", profile]])  # the Makefile's `tables`
    rows.append({"pass": "second", "step": "make tables", "seconds": _run(again, tree, env)})
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame, note: str, profile: str) -> str:
    first = df[df["pass"] == "first"]
    total = float(first["seconds"].sum())
    shown = df.assign(minutes=(df["seconds"] / 60).round(1), seconds=df["seconds"].round(0))
    return (f"# All of Table 2 on the {profile} profile ({platform.machine()}, "
            f"{os.cpu_count()} cores "
            f"visible)\n\n{note}\n\nFirst pass (from empty `data/` and `results/`): "
            f"**{total / 60:.0f} min** in all.\n\n{shown.to_markdown(index=False)}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    profile = parser.parse_args().profile
    name = "tables" if profile == "proxy" else f"tables_{profile}"
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nlrepro-tables-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        df = measure(tree, profile)
        shutil.rmtree(tree / "data", ignore_errors=True)
    df.to_csv(OUT / f"{name}.csv", index=False)
    note = ("Each table's make target in order, then the claims; the second pass runs every "
            "target again and launches nothing.")
    (OUT / f"{name}.md").write_text(summary(df, note, profile))
    print((OUT / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
