"""Grid expansion, run ids and run states for one paper table.

A grid file (``experiments/table2X.yaml``) lists the paper's rows as config
overrides.  Expanding it with a profile gives one run per row × depth × seed; a
run's id is a hash of its resolved config, its folder
``<results>/<profile>/<table>/<run-id>/``.  A run is *not launched* (no folder
or no checkpoint yet), *incomplete* (started, crashed or killed: it resumes
from ``last.ckpt``) or *done* (``done`` marker).  Launching starts only what is
not done, so a second ``make table2a`` is a no-op.  A run whose exact config is
already done under another table is reused (its summary is copied), so the
shared baselines of Table 2 train once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from nlrepro.config import (ConfigError, RunConfig, config_hash, load_config, merge, parse_set,
                            read_yaml, to_dict)
from nlrepro.locks import run_lock
from nlrepro.train import is_done, prepare_run_dir, read_summary
from nlrepro.utils import atomic_write_json, tmp_prefix

GRID_KEYS = {"table", "title", "seeds", "base", "rows", "depths", "profiles", "plot", "cost",
             "init_from", "notes"}
ROW_KEYS = {"label", "set", "depth", "baseline"}
STATES = ("not launched", "incomplete", "done")


@dataclass
class RunSpec:
    """One run of a table: which paper row it reproduces and its resolved config."""

    table: str
    label: str
    depth: int
    seed: int
    config: RunConfig
    run_dir: Path
    depends_on: "RunSpec | None" = None
    labels: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def state(self) -> str:
        if is_done(self.run_dir):
            return "done"
        if (self.run_dir / "checkpoints").is_dir() or (self.run_dir / "error.txt").is_file():
            return "incomplete"
        return "not launched"

    def error(self) -> str | None:
        path = self.run_dir / "error.txt"
        if not path.is_file():
            return None
        lines = [ln for ln in path.read_text().strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "crashed"


def load_grid(path: Path) -> dict:
    """Read and check a grid file (data only: ``yaml.safe_load``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r} not found")
    grid = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: a grid must be a mapping with 'table' and 'rows', "
                          f"got {type(grid).__name__}")
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(GRID_KEYS)}")
    for key in ("table", "rows"):
        if key not in grid:
            raise ConfigError(f"{path}: missing {key!r}")
    grid["table"] = str(grid["table"])
    check_rows(grid["rows"], path)
    grid["_path"] = str(path)
    return grid


def check_rows(rows: Any, path: Path) -> None:
    """``rows`` must be a non-empty list of mappings, each with a label and known keys."""
    if not isinstance(rows, list) or not rows:
        got = "an empty list" if rows == [] else f"{type(rows).__name__} {rows!r}"
        raise ConfigError(f"{path}: rows must be a non-empty list of mappings such as "
                          f"{{label: ..., set: {{...}}}}, got {got}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: row {i} must be a mapping such as {{label: ..., set: "
                              f"{{...}}}}, got {type(row).__name__} {row!r}")
        bad = set(row) - ROW_KEYS
        if bad:
            raise ConfigError(f"{path}: row {i} has unknown keys {sorted(bad)}; "
                              f"valid: {sorted(ROW_KEYS)}")
        if "label" not in row:
            raise ConfigError(f"{path}: row {i} has no label; valid keys: {sorted(ROW_KEYS)}")
        if not isinstance(row.get("set") or {}, dict):
            raise ConfigError(f"{path}: row {i} ({row['label']!r}): set must be a mapping of "
                              f"config keys, got {row['set']!r}")


def grid_path(table: str) -> Path:
    """``2a`` -> ``experiments/table2a.yaml`` (next to the package)."""
    root = Path(__file__).resolve().parent.parent / "experiments"
    path = root / f"table{table.removeprefix('table')}.yaml"
    if not path.is_file():
        valid = sorted(p.stem.removeprefix("table") for p in root.glob("table*.yaml"))
        raise ConfigError(f"unknown table {table!r}; valid tables: {', '.join(valid)}")
    return path


def seeds_for(grid: dict, profile: str) -> list[int]:
    seeds = grid.get("seeds", [0])
    if isinstance(seeds, dict):
        seeds = seeds.get(profile, seeds.get("default", [0]))
    return [int(s) for s in seeds]


def depths_for(grid: dict, row: dict) -> list[int]:
    if "depth" in row:
        return [int(row["depth"])]
    return [int(d) for d in grid.get("depths", [None])] if grid.get("depths") else [None]


def expand(grid: dict, profile: str = "proxy", results: Path = Path("results"),
           sets: list[str] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    """Rows × depths × seeds -> validated run specs (nothing is written)."""
    table = grid["table"]
    base = dict(grid.get("base") or {})
    base.update((grid.get("profiles") or {}).get(profile) or {})
    extra = parse_set(sets)
    parents = _parents(grid, profile, results, sets, seeds)
    specs: dict[Path, RunSpec] = {}
    out: list[RunSpec] = []
    for row in grid["rows"]:
        for depth in depths_for(grid, row):
            for seed in seeds if seeds is not None else seeds_for(grid, profile):
                overrides = merge(base, row.get("set") or {})
                if depth is not None:
                    overrides["model.depth"] = depth
                overrides["seed"] = seed
                overrides["output_dir"] = str(Path(results) / profile / table)
                parent = None
                if parents is not None:
                    parent = parents.get((row["label"], depth or _depth(overrides), seed))
                    if parent is None:
                        raise ConfigError(f"table {table}: row {row['label']!r} has no "
                                          f"matching row in table {grid['init_from']}")
                    overrides["trainer.init_from"] = str(parent.run_dir / "checkpoints"
                                                         / "last.ckpt")
                try:
                    cfg = load_config(profile, overrides=merge(overrides, extra))
                except ConfigError as err:
                    raise ConfigError(f"table {table}, row {row['label']!r}"
                                      f"{f', R{depth}' if depth else ''}: {err}") from None
                run_dir = Path(cfg.output_dir) / config_hash(cfg)
                if run_dir in specs:  # two rows with one config share a run
                    specs[run_dir].labels.append(row["label"])
                    continue
                spec = RunSpec(table, row["label"], cfg.model.depth, seed, cfg, run_dir,
                               parent, [row["label"]])
                specs[run_dir] = spec
                out.append(spec)
    return out


def _depth(overrides: dict) -> int:
    return int(overrides.get("model.depth", 50))


def _parents(grid: dict, profile: str, results: Path, sets: list[str] | None,
             seeds: list[int] | None) -> dict[tuple, RunSpec] | None:
    """Runs of the table this one fine-tunes from (Table 2g <- 2f), keyed by row/depth/seed."""
    source = grid.get("init_from")
    if not source:
        return None
    specs = expand(load_grid(grid_path(str(source))), profile, results, sets, seeds)
    return {(s.label, s.depth, s.seed): s for s in specs}


def write_spec(spec: RunSpec) -> None:
    """Create the run folder: ``config.yaml`` and ``row.json`` (what it reproduces)."""
    prepare_run_dir(spec.config, spec.run_dir)
    atomic_write_json(spec.run_dir / "row.json", {
        "table": spec.table, "labels": spec.labels, "depth": spec.depth, "seed": spec.seed,
        "profile": spec.config.profile, "run_id": spec.run_id,
        "depends_on": str(spec.depends_on.run_dir) if spec.depends_on else None})


def _link_checkpoint(twin: Path, run_dir: Path) -> None:
    """Give a reused run its twin's ``last.ckpt`` so that it can be a parent (2f -> 2g).

    A hard link costs no disk; a copy is the fallback across file systems.
    """
    src = twin / "checkpoints" / "last.ckpt"
    dst = run_dir / "checkpoints" / "last.ckpt"
    if dst.exists() or not src.is_file():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{tmp_prefix(dst.name)}link")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def reuse_done_twin(spec: RunSpec, results: Path) -> bool:
    """If the same config is done under another table, reuse it here.

    The summary and history are copied and the checkpoint linked, so that a reused run
    serves like a trained one, also as the parent a later table fine-tunes from.
    """
    if is_done(spec.run_dir):
        summary = read_summary(spec.run_dir) or {}
        if summary.get("reused_from"):  # reused before checkpoints were linked
            _link_checkpoint(Path(summary["reused_from"]), spec.run_dir)
        return True
    pattern = f"{spec.config.profile}/*/{spec.run_id}/done"
    for done in sorted(Path(results).glob(pattern)):
        twin = done.parent
        if twin == spec.run_dir:
            continue
        summary = read_summary(twin)
        if summary is None:
            continue
        write_spec(spec)
        with run_lock(spec.run_dir):  # not while another sweep trains or reuses it
            if is_done(spec.run_dir):
                return True
            summary = {**summary, "reused_from": str(twin)}
            atomic_write_json(spec.run_dir / "summary.json", summary)
            for extra in ("metrics.csv",):
                if (twin / extra).is_file():
                    shutil.copyfile(twin / extra, spec.run_dir / extra)
            _link_checkpoint(twin, spec.run_dir)
            (spec.run_dir / "done").write_text("")
        return True
    return False


def status_frame(specs: list[RunSpec]) -> Any:
    import pandas as pd

    rows = []
    for s in specs:
        summary = read_summary(s.run_dir) or {}
        metric = summary.get("metrics", {}).get("test/top1_video")
        job = s.run_dir / "job.txt"
        rows.append({"row": " / ".join(s.labels), "depth": s.depth, "seed": s.seed,
                     "run_id": s.run_id, "state": s.state(),
                     "top1_video": None if metric is None else round(metric, 2),
                     "job": job.read_text().strip() if job.is_file() else "",
                     "error": s.error() or ""})
    return pd.DataFrame(rows)


def launch(specs: list[RunSpec], launcher: str, results: Path) -> list:
    """Run what is not done, parents (Table 2f for 2g) first."""
    from nlrepro import launch as launchers

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
            folder = Path(results) / todo[0].config.profile / todo[0].table / ".submitit"
            outcomes += launchers.launch_slurm(dirs, cfg, folder)
        else:
            workers = todo[0].config.launcher.local_workers
            if todo[0].config.data.proxy is not None:
                # Once, before the pool: parallel runs must not all generate the videos.
                from nlrepro.data.proxy import ensure_proxy_data
                from nlrepro.pretrain import ensure_all
                ensure_proxy_data(todo[0].config)
                ensure_all(s.config for s in todo)
            outcomes += launchers.launch_local(dirs, workers=min(workers, len(dirs)))
    return outcomes


# ---- command line ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="experiments/table2X.yaml")
    parser.add_argument("--profile", default="proxy")
    parser.add_argument("--launcher", choices=("local", "slurm"), default=None,
                        help="default: the profile's launcher.name")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run, e.g. trainer.max_epochs=2")
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
          + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES))
    if len(df):
        print(df.to_string(index=False))


def _print_plan(grid: dict, specs: list[RunSpec]) -> None:
    _print_status(grid, specs)
    todo = [s for s in specs if s.state() != "done"]
    if not todo:
        print("nothing to launch")
        return
    try:
        from nlrepro.pricing import format_plan, load_throughput, price_runs
    except ImportError as err:  # pragma: no cover
        print(f"(pricing unavailable: {err})")
        return
    df = price_runs([s.config for s in todo], todo[0].config.launcher, load_throughput())
    df.insert(0, "row", [" / ".join(s.labels) for s in todo])
    df.insert(1, "seed", [s.seed for s in todo])
    print(format_plan(df, title=f"Table {grid['table']}"))
    print(json.dumps({"runs_to_launch": len(todo)}))
