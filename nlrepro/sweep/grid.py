"""Grid expansion: one paper table's rows × depths × seeds -> run specs.

A grid file (``experiments/table2X.yaml``) lists the paper's rows as config overrides.
Expanding it with a profile gives one run per row × depth × seed; a run's id is a hash of its
resolved config (``run.identity``), its folder ``<results>/<profile>/<table>/<run-id>/``
(``run.rundir``).  A run whose exact config is already done under another table is reused
(summary copied, checkpoint linked), so the shared baselines of Table 2 train once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlrepro.choices import DEFAULT_PROFILE
from nlrepro.config import (ConfigError, RunConfig, load_config, merge, parse_set,
                            profile_family, read_yaml)
from nlrepro.run import rundir
from nlrepro.run.tracking import run_name

GRID_KEYS = {"table", "title", "seeds", "base", "rows", "depths", "profiles", "plot", "cost",
             "init_from", "notes"}
ROW_KEYS = {"label", "set", "depth", "baseline"}
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


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
        """One of ``rundir.STATES``."""
        return rundir.state(self.run_dir)

    def error(self) -> str | None:
        return rundir.last_error(self.run_dir)

    @property
    def name(self) -> str:
        """Readable, beside the run id: ``2a/Gaussian/R50/s0`` (``run.tracking``)."""
        return run_name(self.config, self.table, self.labels)


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
    root = EXPERIMENTS
    path = root / f"table{table.removeprefix('table')}.yaml"
    if not path.is_file():
        valid = sorted(p.stem.removeprefix("table") for p in root.glob("table*.yaml"))
        raise ConfigError(f"unknown table {table!r}; valid tables: {', '.join(valid)}")
    return path


def by_profile(entries: dict, profile: str, default: Any = None) -> Any:
    """A grid's per-profile entry: the profile's own, else its family's (the profile it
    ``extends``), else ``default``."""
    for key in (profile, profile_family(profile)):
        if key in entries:
            return entries[key]
    return default


def seeds_for(grid: dict, profile: str) -> list[int]:
    seeds = grid.get("seeds", [0])
    if isinstance(seeds, dict):
        seeds = by_profile(seeds, profile, seeds.get("default", [0]))
    return [int(s) for s in seeds]


def depths_for(grid: dict, row: dict) -> list[int]:
    if "depth" in row:
        return [int(row["depth"])]
    return [int(d) for d in grid.get("depths", [None])] if grid.get("depths") else [None]


def expand(grid: dict, profile: str = DEFAULT_PROFILE, results: Path = Path("results"),
           sets: list[str] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    """Rows × depths × seeds -> validated run specs (nothing is written)."""
    table = grid["table"]
    base = dict(grid.get("base") or {})
    base.update(by_profile(grid.get("profiles") or {}, profile) or {})
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
                    overrides["trainer.init_from"] = str(rundir.last_checkpoint(parent.run_dir))
                try:
                    cfg = load_config(profile, overrides=merge(overrides, extra))
                except ConfigError as err:
                    raise ConfigError(f"table {table}, row {row['label']!r}"
                                      f"{f', R{depth}' if depth else ''}: {err}") from None
                run_dir = rundir.run_dir_for(cfg)
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
    rundir.prepare_run_dir(spec.config, spec.run_dir)
    rundir.write_row(spec.run_dir, {
        "name": spec.name, "table": spec.table, "labels": spec.labels, "depth": spec.depth, "seed": spec.seed,
        "profile": spec.config.profile, "run_id": spec.run_id,
        "depends_on": str(spec.depends_on.run_dir) if spec.depends_on else None})


def reuse_done_twin(spec: RunSpec, results: Path) -> bool:
    """If the same config is done under another table, reuse it here (True when done).

    The summary and history are copied and the checkpoint linked, so that a reused run
    serves like a trained one, also as the parent a later table fine-tunes from.
    """
    if rundir.is_done(spec.run_dir):
        summary = rundir.read_summary(spec.run_dir) or {}
        if summary.get("reused_from"):  # reused before checkpoints were linked
            rundir.link_checkpoint(Path(summary["reused_from"]), spec.run_dir)
        return True
    for twin in rundir.done_twins(results, spec.config.profile, spec.run_id):
        if twin == spec.run_dir or rundir.read_summary(twin) is None:
            continue
        write_spec(spec)
        with rundir.run_lock(spec.run_dir):  # not while another sweep trains or reuses it
            if not rundir.is_done(spec.run_dir):
                rundir.adopt_twin(twin, spec.run_dir)
        return True
    return False
