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
from nlrepro.config import ConfigError, add_profile_argument, add_set_argument
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
        state = s.state()
        # A run not done: how far its metrics got (also a first attempt still in epoch 1,
        # before its first checkpoint); a done one: its epochs.
        seen = rundir.epoch_progress(s.run_dir) if state != "done" else {}
        epoch = summary.get("epochs") if state == "done" else seen.get("epoch")
        rows.append({"name": s.name, "run_id": s.run_id, "state": state,
                     "epoch": "" if epoch is None else f"{epoch}/{s.config.trainer.max_epochs}",
                     "val_top1": seen.get("val_top1"),
                     "top1_video": None if metric is None else round(metric, 2),
                     "job": rundir.recorded_job(s.run_dir) or "",
                     "error": s.error() or ""})
    return pd.DataFrame(rows)


def launch(specs: list[RunSpec], launcher: str, results: Path, wait: bool = True) -> list:
    """Run what is not done, parents (Table 2f for 2g) first.

    ``wait=False`` (SLURM only) returns once the jobs are submitted; runs whose parent is not
    done yet are left for the next call (they would start from a missing checkpoint)."""
    outcomes = []
    if launcher != "slurm":
        for s in specs:  # before any run starts, parents included
            launchers.validate_local(s.config.launcher)
    parents = {s.depends_on.run_dir: s.depends_on for s in specs if s.depends_on}
    for phase in (list(parents.values()), specs):
        todo = [s for s in phase if not reuse_done_twin(s, results)]
        if not wait and phase is specs:
            waiting = [s for s in todo if s.depends_on and s.depends_on.state() != "done"]
            if waiting:
                print(f"{len(waiting)} runs wait for their parent runs (table "
                      f"{waiting[0].depends_on.table}): run this command again once those "
                      "are done", flush=True)
            todo = [s for s in todo if s not in waiting]
        for s in todo:
            write_spec(s)
        if not todo:
            continue
        dirs = [s.run_dir for s in todo]
        if launcher == "slurm":
            cfg = todo[0].config.launcher
            folder = Path(results) / todo[0].config.profile / todo[0].table / SUBMITIT_DIR
            outcomes += launchers.launch_slurm(dirs, cfg, folder, wait=wait)
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
    parser.add_argument("grid", type=Path, nargs="+",
                        help="experiments/table2X.yaml; several grids run one after another")
    add_profile_argument(parser)
    parser.add_argument("--launcher", choices=LAUNCHERS, default=None,
                        help="default: the profile's launcher.name")
    parser.add_argument("--results", type=Path, default=Path("results"))
    add_set_argument(parser, "override for every run, e.g. trainer.max_epochs=2")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="override the grid's seeds, e.g. --seeds 0 1")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its cost")
    parser.add_argument("--status", action="store_true",
                        help="print every run: name, state, epoch, latest val top-1, job")
    parser.add_argument("--no-wait", action="store_true",
                        help="SLURM: return once the jobs are submitted (follow with --status)")


def main(args: argparse.Namespace) -> int:
    """Every grid is loaded and expanded (so validated) before the first run starts; one
    process for several grids pays the torch import once (a no-op ``make tables``)."""
    sets = list(args.sets)
    if args.launcher:
        sets.append(f"launcher.name={args.launcher}")
    plans = []
    for path in args.grid:
        grid = load_grid(path)
        plans.append((grid, expand(grid, args.profile, args.results, sets, args.seeds)))
    if args.status or args.dry_run:
        for grid, specs in plans:
            (_print_status if args.status else _print_plan)(grid, specs)
        return 0
    launcher = next((specs[0].config.launcher.name for _, specs in plans if specs), "local")
    if args.no_wait and launcher != "slurm":
        raise ConfigError("--no-wait: only the SLURM launcher runs without this command "
                          f"(launcher {launcher!r}); use --launcher slurm")
    failed = []
    for grid, specs in plans:
        outcomes = launch(specs, launcher, args.results, wait=not args.no_wait)
        failed += [o for o in outcomes if not o.ok]
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
        print(df.astype(object).where(df.notna(), "").to_string(index=False))


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
