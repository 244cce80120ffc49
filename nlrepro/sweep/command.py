"""``nlrepro sweep``: expand a table's grid, launch what is not done, report run states.

Launching starts only what is not done (a second ``make table2a`` is a no-op): runs done
under another table are reused, parents (Table 2f for 2g) go first, and on the proxy the
videos and the frame pre-training are made once before the runs start in parallel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nlrepro.choices import LAUNCHERS
from nlrepro.config import add_set_argument
from nlrepro.proxy.dataset import ensure_proxy_data
from nlrepro.proxy.pretrain import ensure_all
from nlrepro.run import rundir
from nlrepro.sweep import launch as launchers
from nlrepro.sweep.grid import RunSpec, expand, load_grid, reuse_done_twin, write_spec
from nlrepro.sweep.pricing import format_plan, load_throughput, price_runs

SUBMITIT_DIR = ".submitit"  # per table: submitit's pickles and logs


def status_frame(specs: list[RunSpec]) -> Any:
    import pandas as pd

    rows = []
    for s in specs:
        summary = rundir.read_summary(s.run_dir) or {}
        metric = summary.get("metrics", {}).get("test/top1_video")
        rows.append({"row": " / ".join(s.labels), "depth": s.depth, "seed": s.seed,
                     "run_id": s.run_id, "state": s.state(),
                     "top1_video": None if metric is None else round(metric, 2),
                     "job": rundir.recorded_job(s.run_dir) or "",
                     "error": s.error() or ""})
    return pd.DataFrame(rows)


def launch(specs: list[RunSpec], launcher: str, results: Path) -> list:
    """Run what is not done, parents (Table 2f for 2g) first."""
    outcomes = []
    if launcher != "slurm":
        for s in specs:  # before any run starts, parents included
            launchers.validate_local(s.config.launcher)
    parents = {s.depends_on.run_dir: s.depends_on for s in specs if s.depends_on}
    for phase in (list(parents.values()), specs):
        todo = [s for s in phase if not reuse_done_twin(s, results)]
        for s in todo:
            write_spec(s)
        if not todo:
            continue
        dirs = [s.run_dir for s in todo]
        if launcher == "slurm":
            cfg = todo[0].config.launcher
            folder = Path(results) / todo[0].config.profile / todo[0].table / SUBMITIT_DIR
            outcomes += launchers.launch_slurm(dirs, cfg, folder)
        else:
            workers = todo[0].config.launcher.local_workers
            if todo[0].config.data.proxy is not None:
                # Once, before the pool: parallel runs must not all generate the videos.
                ensure_proxy_data(todo[0].config)
                ensure_all(s.config for s in todo)
            outcomes += launchers.launch_local(dirs, workers=min(workers, len(dirs)))
    return outcomes


# ---- command line ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="experiments/table2X.yaml")
    parser.add_argument("--profile", default="proxy")
    parser.add_argument("--launcher", choices=LAUNCHERS, default=None,
                        help="default: the profile's launcher.name")
    parser.add_argument("--results", type=Path, default=Path("results"))
    add_set_argument(parser, "override for every run, e.g. trainer.max_epochs=2")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="override the grid's seeds, e.g. --seeds 0 1")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its cost")
    parser.add_argument("--status", action="store_true", help="print the state of every run")


def main(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid)
    sets = list(args.sets)
    if args.launcher:
        sets.append(f"launcher.name={args.launcher}")
    specs = expand(grid, args.profile, args.results, sets, args.seeds)
    if args.status:
        _print_status(grid, specs)
        return 0
    if args.dry_run:
        _print_plan(grid, specs)
        return 0
    launcher = specs[0].config.launcher.name if specs else "local"
    outcomes = launch(specs, launcher, args.results)
    failed = [o for o in outcomes if not o.ok]
    _print_status(grid, specs)
    for o in failed:
        print(f"FAILED {o.run_dir}: {o.error}", file=sys.stderr)
    return 1 if failed else 0


def _print_status(grid: dict, specs: list[RunSpec]) -> None:
    df = status_frame(specs)
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    print(f"table {grid['table']}: {len(df)} runs; "
          + ", ".join(f"{counts.get(s, 0)} {s}" for s in rundir.STATES))
    if len(df):
        print(df.to_string(index=False))


def _print_plan(grid: dict, specs: list[RunSpec]) -> None:
    _print_status(grid, specs)
    todo = [s for s in specs if s.state() != "done"]
    if not todo:
        print("nothing to launch")
        return
    df = price_runs([s.config for s in todo], todo[0].config.launcher, load_throughput())
    df.insert(0, "row", [" / ".join(s.labels) for s in todo])
    df.insert(1, "seed", [s.seed for s in todo])
    print(format_plan(df, title=f"Table {grid['table']}"))
    print(json.dumps({"runs_to_launch": len(todo)}))
