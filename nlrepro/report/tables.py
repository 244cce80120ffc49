"""Render a paper table from ``runs.csv``: the paper's numbers beside ours.

For each paper row (from the grid file, so missing runs are visible): the
paper's top-1/top-5, ours as mean ± std over seeds with n, and both
differences to the table's baseline row.  Missing runs show as "—", never as
zeros.  Footnotes say the profile, clip length, test views, videos used/failed,
the NL placements, and how many runs are missing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import yaml

from nlrepro.choices import DEFAULT_PROFILE
from nlrepro.config import ConfigError, add_profile_argument
from nlrepro.info import model_info
from nlrepro.report.collect import KIND_COLUMNS
from nlrepro.models.placement import compile_placement, positions, stage_blocks_of
from nlrepro.sweep.grid import RunSpec, expand, grid_path, load_grid
from nlrepro.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
PAPER_CSV = ROOT / "paper_tables" / "paper_table2.csv"
FOOTNOTES = ROOT / "experiments" / "footnotes.yaml"
DASH = "—"
KIND_HEADER = "ours top-1 per kind: "


def load_paper(path: Path = PAPER_CSV) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"table": str})
    return df


def _fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if _missing(value):
        return DASH
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean_std(values: pd.Series) -> tuple[float | None, float | None, int]:
    values = values.dropna()
    if values.empty:
        return None, None, 0
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), std, len(values)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pm(mean: float | None, std: float | None) -> str:
    if _missing(mean):
        return DASH
    return f"{mean:.1f}" if std is None or math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _row_keys(grid: dict, specs: list[RunSpec]) -> list[tuple[str, int, bool]]:
    """Paper rows in display order: (label, depth, is_baseline), depths grouped."""
    keys: list[tuple[str, int, bool]] = []
    for depth in dict.fromkeys(s.depth for s in specs):
        for i, row in enumerate(grid["rows"]):
            if any(s.depth == depth and row["label"] in s.labels for s in specs):
                keys.append((row["label"], depth, bool(row.get("baseline", i == 0))))
    return keys


def _current(rows: pd.DataFrame, specs: list[RunSpec]) -> pd.DataFrame:
    """The runs of today's grid when the results hold any: after a profile change, runs of
    the old config (other run ids, same row labels) must not be averaged in.  Rows with no
    run of today's config (e.g. results copied from elsewhere) are taken by their labels."""
    if "run_id" not in rows or rows.empty:
        return rows
    mine = rows[rows["run_id"].isin({s.run_id for s in specs})]
    return mine if not mine.empty else rows


def current_runs(runs: pd.DataFrame, specs: list[RunSpec]) -> pd.DataFrame:
    """Per row and depth, the runs ``build_table`` counts (``_current``): the training curves
    must not mix in runs of an older config either."""
    if runs.empty:
        return runs
    return pd.concat([_current(rows, specs)
                      for _, rows in runs.groupby(["row", "depth"], sort=False)])


def build_table(grid: dict, runs: pd.DataFrame, paper: pd.DataFrame,
                specs: list[RunSpec]) -> pd.DataFrame:
    """One row per paper row: paper numbers, ours (mean, std, n), deltas to the baseline."""
    table = grid["table"]
    runs = runs[runs["table"].astype(str) == table]
    paper = paper[paper["table"] == table]
    out = []
    for label, depth, is_base in _row_keys(grid, specs):
        p = paper[(paper["row"] == label) & (paper["depth"] == depth)]
        if p.empty:
            raise ConfigError(f"table {table}: row {label!r} (R{depth}) is not in {PAPER_CSV.name}")
        r = _current(runs[(runs["row"] == label) & (runs["depth"] == depth)], specs)
        m1, s1, n = _mean_std(r["top1_video"])
        m5, s5, _ = _mean_std(r["top5_video"])
        expected = sum(1 for s in specs if s.depth == depth and label in s.labels)
        kinds = {c: _mean_std(r[c])[0] for c in KIND_COLUMNS if c in r.columns}
        out.append({**kinds, "row": label, "depth": depth, "baseline": is_base,
                    "paper_top1": float(p["top1"].iloc[0]), "paper_top5": float(p["top5"].iloc[0]),
                    "paper_params_rel": p["params_rel"].iloc[0],
                    "paper_flops_rel": p["flops_rel"].iloc[0],
                    "top1_mean": m1, "top1_std": s1, "top5_mean": m5, "top5_std": s5,
                    "n": n, "expected": expected,
                    "seeds": r.sort_values("seed")["top1_video"].round(1).tolist()})
    df = pd.DataFrame(out)
    for depth, group in df.groupby("depth", sort=False):
        base = group[group["baseline"]].iloc[0]
        for col, ref in (("paper_top1", "paper_delta"), ("top1_mean", "delta")):
            df.loc[group.index, ref] = [None if _missing(v) or _missing(base[col])
                                        else v - base[col] for v in group[col]]
    return df


def add_cost(df: pd.DataFrame, specs: list[RunSpec]) -> pd.DataFrame:
    """Params and FLOPs (``nlrepro info``) of each row, relative to the first row."""
    infos = {}
    for label, depth in zip(df["row"], df["depth"]):
        spec = next(s for s in specs if s.depth == depth and label in s.labels)
        infos[(label, depth)] = model_info(spec.config)
    first = infos[(df["row"].iloc[0], df["depth"].iloc[0])]
    df = df.copy()
    df["params_rel"] = [infos[k]["params"] / first["params"] for k in zip(df["row"], df["depth"])]
    df["flops_rel"] = [infos[k]["gflops"] / first["gflops"] for k in zip(df["row"], df["depth"])]
    return df


def display_frame(df: pd.DataFrame, cost: bool) -> pd.DataFrame:
    """The human-readable table (strings), paper beside ours."""
    rows = []
    for _, r in df.iterrows():
        row = {"model": r["row"], "R": int(r["depth"]),
               "paper top-1": _fmt(r["paper_top1"]), "paper top-5": _fmt(r["paper_top5"]),
               "ours top-1": _pm(r["top1_mean"], r["top1_std"]),
               "ours top-5": _pm(r["top5_mean"], r["top5_std"]),
               "Δ top-1 paper": DASH if r["baseline"] else _fmt(r["paper_delta"], signed=True),
               "Δ top-1 ours": DASH if r["baseline"] else _fmt(r["delta"], signed=True),
               "n": f"{r['n']}/{r['expected']}"}
        kinds = {c: r.get(c) for c in KIND_COLUMNS if c in df.columns and not df[c].isna().all()}
        if kinds and not any(_missing(v) for v in kinds.values()):  # the relations proxies
            header = KIND_HEADER + " / ".join(c.removeprefix("top1_") for c in kinds)
            row[header] = " / ".join(f"{v:.0f}" for v in kinds.values())
        if cost:
            row["params (paper)"] = f"{r['params_rel']:.2f}× ({_fmt(r['paper_params_rel'])}×)"
            row["FLOPs (paper)"] = f"{r['flops_rel']:.2f}× ({_fmt(r['paper_flops_rel'])}×)"
        rows.append(row)
    return pd.DataFrame(rows)


def footnotes(grid: dict, df: pd.DataFrame, runs: pd.DataFrame, specs: list[RunSpec],
              profile: str) -> list[str]:
    notes = []
    profile_notes = (yaml.safe_load(FOOTNOTES.read_text()) or {}) if FOOTNOTES.is_file() else {}
    if profile_notes.get(profile):
        notes.append(" ".join(str(profile_notes[profile]).split()))
    cfg = specs[0].config
    d = cfg.data
    notes.append(f"Profile `{profile}`: {d.frames}-frame clips (stride {d.stride}), "
                 f"{d.crop}² training crops; test = {d.num_clips} clip(s) × {d.num_crops} "
                 f"crop(s) of {d.test_crop}² per video, softmax averaged (video-level top-1/top-5, "
                 "%); ours = mean ± std over seeds, n = finished/expected runs.")
    mine = runs[runs["table"].astype(str) == grid["table"]]
    if len(mine) and mine["videos"].notna().any():
        used = (mine["videos"] - mine["videos_failed"]).astype(int)
        notes.append(f"Test videos per run: {int(mine['videos'].max())} listed, "
                     f"{int(used.min())}–{int(used.max())} used, "
                     f"{int(mine['videos_failed'].max())} failed at most (failed count as wrong).")
    missing = int((df["expected"] - df["n"]).sum())
    notes.append(f"Missing runs: {missing} of {int(df['expected'].sum())}"
                 + (" (shown as —)." if missing else "."))
    placements = _placements(specs)
    if placements:
        notes.append("NL blocks (stage.index of the residual block they follow): "
                      + "; ".join(placements) + ".")
    if grid.get("init_from"):
        notes.append(f"Each row is fine-tuned from the same row, depth and seed of "
                     f"Table {grid['init_from']}.")
    return notes


def _placements(specs: list[RunSpec]) -> list[str]:
    out = {}
    for s in specs:
        nl = s.config.model.nonlocal_
        placed = compile_placement(nl.blocks, nl.stages, stage_blocks_of(s.config.model),
                                   s.config.model.depth, fill=nl.fill_small_stages)
        pos = positions(placed)
        if pos:
            out.setdefault(f"{s.label} R{s.depth}", ", ".join(pos))
    return [f"{k}: {v}" for k, v in out.items()]


def to_markdown(title: str, table: pd.DataFrame, notes: list[str]) -> str:
    lines = [f"# {title}", "", table.to_markdown(index=False), ""]
    lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def to_latex(title: str, table: pd.DataFrame, notes: list[str]) -> str:
    body = table.to_latex(index=False, escape=True)
    foot = "\n".join(f"% {n}" for n in notes)
    return f"% {title}\n{foot}\n{body}"


def render(table: str, profile: str = DEFAULT_PROFILE, results: Path = Path("results"),
           out_dir: Path | None = None, plots: bool = True) -> dict[str, Path]:
    """Write ``paper_tables/<profile>/table2X.{md,tex,png}``; returns the paths."""
    grid = load_grid(grid_path(table))
    specs = expand(grid, profile, results)
    runs_csv = Path(results) / profile / "runs.csv"
    runs = pd.read_csv(runs_csv, dtype={"table": str}) if runs_csv.is_file() \
        else pd.DataFrame(columns=["table", "row", "depth", "seed", "top1_video", "top5_video",
                                   "videos", "videos_failed"])
    df = build_table(grid, runs, load_paper(), specs)
    cost = bool(grid.get("cost"))
    if cost:
        df = add_cost(df, specs)
    title = f"Table {grid['table']} ({profile}): {grid.get('title', '')}".rstrip(": ")
    shown = display_frame(df, cost)
    notes = footnotes(grid, df, runs, specs, profile)
    out_dir = Path(out_dir) if out_dir else ROOT / "paper_tables" / profile
    name = f"table{grid['table']}"
    paths = {"md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex"}
    atomic_write_text(paths["md"], to_markdown(title, shown, notes))
    atomic_write_text(paths["tex"], to_latex(title, shown, notes))
    if plots:
        # Imported here, not on top: plots selects matplotlib's Agg backend, which must not
        # happen to a notebook that only imports the table functions.
        from nlrepro.report.plots import plot_curves, plot_table

        paths["png"] = plot_table(df, grid, title, out_dir / f"{name}.png")
        curves = plot_curves(current_runs(runs[runs["table"].astype(str) == grid["table"]],
                                          specs), grid, out_dir / f"{name}_curves.png")
        if curves:
            paths["curves"] = curves
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", nargs="+", help="2a … 2g (several render in one process)")
    add_profile_argument(parser)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None, help="default paper_tables/<profile>")
    parser.add_argument("--no-plots", action="store_true")


def main(args: argparse.Namespace) -> int:
    for table in args.table:
        paths = render(table, args.profile, args.results, args.out, not args.no_plots)
        print(Path(paths["md"]).read_text())
        for kind, path in paths.items():
            print(f"{kind}: {path}")
    return 0
