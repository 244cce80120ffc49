"""Run every ``benchmarks/bench_*.py`` and gather their summaries (``make bench``).

Each script runs as its own subprocess, one after the other (a crash or a skip in one does
not stop the others), and writes ``results/bench/<name>.csv`` and ``<name>.md``; this script
concatenates the ``.md`` files into ``results/bench/README.md``, in script order, with a line
for any script that failed.

Modes reach the scripts through ``NLREPRO_BENCH_MODE``: ``default`` (``make bench``: about
8 minutes on a busy 2-core machine), ``--quick`` (a smoke run of every script) and ``--full``
(the whole non-local grid and full-length proxy runs: over an hour).  ``--only`` / ``--skip``
choose scripts; the README keeps the last summary of those not run, marked as such.
``slurm`` needs root and a local SLURM cluster (the SLURM tests bring one up): it runs only
when named (``--only slurm`` or ``--with slurm``); so does ``tables`` (every table from empty
folders, about 50 min for the default proxy).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import MODES, RESULTS as OUT, ROOT  # noqa: E402

OPT_IN = {"slurm": "needs root and a local SLURM cluster; `run_all.py --with slurm`",
          "tables": "every table from empty folders, about 50 min; `run_all.py --with tables`"}


def names() -> list[str]:
    return [p.stem.removeprefix("bench_") for p in sorted(HERE.glob("bench_*.py"))]


def chosen(only: list[str] | None = None, skip: list[str] | None = None,
           with_: list[str] | None = None) -> list[str]:
    """Benchmark names to run, in script order; unknown names are an error."""
    known = names()
    for n in (only or []) + (skip or []) + (with_ or []):
        if n not in known:
            raise SystemExit(f"run_all: unknown benchmark {n!r}; choose from {', '.join(known)}")
    if only:
        return [n for n in known if n in only]
    return [n for n in known if n not in (skip or []) and (n not in OPT_IN or n in (with_ or []))]


def _kept(name: str, md: Path) -> str:
    when = datetime.fromtimestamp(md.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return f"*(`bench_{name}.py` not run this time; its summary from {when}:)*\n\n{md.read_text()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode",
                   help="smoke run of every benchmark (a few minutes)")
    g.add_argument("--full", action="store_const", const="full", dest="mode",
                   help="every case and full-length proxy runs (over an hour)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these: {', '.join(names())}")
    p.add_argument("--skip", nargs="+", metavar="NAME", help="leave these out")
    p.add_argument("--with", dest="with_", nargs="+", metavar="NAME", default=[],
                   help=f"also run opt-in benchmarks ({', '.join(OPT_IN)})")
    args = p.parse_args(argv)
    mode = args.mode or os.environ.get("NLREPRO_BENCH_MODE") or "default"
    if mode not in MODES:
        p.error(f"NLREPRO_BENCH_MODE={mode!r} is not valid; choose one of {', '.join(MODES)}")
    env = {**os.environ, "NLREPRO_BENCH_MODE": mode, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see common.py
    todo = chosen(args.only, args.skip, args.with_)
    sections, failed, timings = [], [], []
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names():
        script, md = HERE / f"bench_{name}.py", OUT / f"{name}.md"
        if name not in todo:  # not run now: keep its last summary, if any
            if name in OPT_IN and not md.is_file():
                sections.append(f"# {name}\n\nNot run: {OPT_IN[name]}.\n")
            elif md.is_file():
                sections.append(_kept(name, md))
            continue
        print(f"== {script.name} (mode {mode})", flush=True)
        t = time.perf_counter()
        before = md.stat().st_mtime if md.is_file() else None
        rc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env).returncode
        dt = time.perf_counter() - t
        print(f"== {script.name}: exit {rc} after {dt:.0f} s", flush=True)
        timings.append(f"{name} {dt:.0f} s" + ("" if rc == 0 else f" (exit {rc})"))
        fresh = md.is_file() and md.stat().st_mtime != before
        if rc != 0:
            failed.append(name)
            sections.append(f"# {name}\n\n**`{script.name}` failed (exit {rc})**; "
                            "see its output.\n")
        elif fresh:
            sections.append(md.read_text())
        else:
            sections.append(f"# {name}\n\n`{script.name}` exited 0 without writing a summary "
                            "(skipped; see its output).\n")
    total = time.perf_counter() - start
    header = ("# Benchmarks\n\nWritten by `make bench` (`benchmarks/run_all.py`) from each "
              "script's `results/bench/<name>.md`; raw numbers in `<name>.csv`.  "
              f"Last run {datetime.now():%Y-%m-%d %H:%M}, mode **{mode}**, "
              f"{total / 60:.1f} min: {', '.join(timings) or 'nothing run'}.  Each script ran "
              "alone (never two at once); timings on a shared machine move with its load, "
              "ratios measured in the same run much less.\n")
    (OUT / "README.md").write_text("\n".join([header, *sections]))
    print(f"wrote {OUT / 'README.md'} ({total:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
