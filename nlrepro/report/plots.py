"""Figures for a paper table (seaborn): ours vs the paper's, training curves, the claims.

The paper's gains (Kinetics, about one point) and ours (the proxy, up to fifty) never share an
axis: each gets its own panel.  Rows keep the table's order and colours everywhere.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nlrepro.run import rundir  # noqa: E402
from nlrepro.utils import save_figure  # noqa: E402

VERDICT_COLOURS = {"holds": "#2a9d3f", "unresolved": "#e69f00", "at ceiling": "#8c8c8c",
                   "fails": "#d1362f", "not run": "#cfcfcf"}


def plot_table(df: pd.DataFrame, grid: dict, title: str, path: Path) -> Path:
    """Our top-1 per row (mean ± std, seeds as dots), then the gain over the baseline row:
    ours and the paper's in panels of their own.

    The same results give the same PNG: seaborn's jitter draws from numpy's global RNG, so
    it is seeded here (and the caller's state put back)."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        return _plot_table(df, grid, title, path)
    finally:
        np.random.set_state(state)


def _plot_table(df: pd.DataFrame, grid: dict, title: str, path: Path) -> Path:
    sns.set_theme(style="whitegrid", context="paper")
    df = df.copy()
    depths = list(dict.fromkeys(df["depth"]))
    df["label"] = [f"{r} (R{d})" if len(depths) > 1 else r
                   for r, d in zip(df["row"], df["depth"])]
    seeds = df[["label", "seeds"]].explode("seeds").dropna()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2),
                             gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    order = list(df["label"])
    if len(seeds):
        sns.stripplot(data=seeds.astype({"seeds": float}), x="label", y="seeds", order=order,
                      ax=ax, color="0.3", size=4, jitter=0.1)
    ax.errorbar(range(len(df)), df["top1_mean"].astype(float), yerr=df["top1_std"].astype(float),
                fmt="o", color="C0", capsize=4, label="ours (mean ± std)")
    ax.set_xticks(range(len(df)), order, rotation=30, ha="right")
    ax.set_ylabel("top-1 (%)")
    ax.set_xlabel("")
    ax.set_title("our runs")
    ax.legend(loc="best", fontsize="small")
    for ax, col, source in ((axes[1], "delta", "ours"),
                            (axes[2], "paper_delta", "the paper (Kinetics)")):
        _gain_panel(ax, df, col, grid.get("plot") == "line", depths)
        ax.set_title(f"gain over the baseline row: {source}")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _gain_panel(ax: plt.Axes, df: pd.DataFrame, col: str, line: bool,
                depths: list[int]) -> None:
    """Δ top-1 per row, one colour per depth, rows in the table's order."""
    gains = df[~df["baseline"]]
    rows = list(dict.fromkeys(gains["row"]))
    palette = sns.color_palette(n_colors=max(len(depths), 1))
    width = 0.8 / max(len(depths), 1)
    for i, depth in enumerate(depths):
        g = gains[gains["depth"] == depth].set_index("row").reindex(rows)
        y = g[col].astype(float).to_numpy()
        x = np.arange(len(rows))
        label = f"R{depth}"
        if line:
            ax.plot(x, y, marker="o", color=palette[i], label=label)
        else:
            ax.bar(x + (i - (len(depths) - 1) / 2) * width, y, width=width, color=palette[i],
                   label=label)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    ax.set_ylabel("Δ top-1 (points)")
    if len(depths) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small",
                  title="depth")


def plot_curves(runs: pd.DataFrame, grid: dict, path: Path) -> Path | None:
    """Validation clip accuracy per epoch for every row (the paper's Figure 4 style):
    mean over seeds, a band of ± one std clipped to [0, 100], rows in the table's order."""
    frames = []
    for _, r in runs.iterrows():
        csv = rundir.metrics_csv(Path(r["run_dir"]))
        if not csv.is_file():
            continue
        m = pd.read_csv(csv)
        if "val/top1_clip" not in m:
            continue
        m = m.dropna(subset=["val/top1_clip"])[["epoch", "val/top1_clip"]]
        m["row"] = f"{r['row']} (R{r['depth']})"
        m["seed"] = r["seed"]
        frames.append(m)
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    data["epoch"] = data["epoch"].astype(int) + 1
    data["acc"] = 100 * data["val/top1_clip"]
    order = _row_order(grid, list(dict.fromkeys(data["row"])))
    stats = data.groupby(["row", "epoch"])["acc"].agg(["mean", "std"]).reset_index()
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    palette = sns.color_palette(n_colors=len(order))
    for colour, row in zip(palette, order):
        s = stats[stats["row"] == row].sort_values("epoch")
        std = s["std"].fillna(0.0)
        ax.plot(s["epoch"], s["mean"], marker="o", ms=3, color=colour, label=row)
        ax.fill_between(s["epoch"], (s["mean"] - std).clip(0, 100),
                        (s["mean"] + std).clip(0, 100), color=colour, alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(top=min(100.0, ax.get_ylim()[1]) + 2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (clip, %)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(f"Table {grid['table']}: validation accuracy during training "
                 "(mean ± std over seeds)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _row_order(grid: dict, present: list[str]) -> list[str]:
    """``"label (R50)"`` names in the grid's order, depth by depth."""
    labels = [row["label"] for row in grid["rows"]]
    depths = sorted({int(p.rsplit("(R", 1)[1].rstrip(")")) for p in present})
    ranked = [f"{label} (R{d})" for d in depths for label in labels]
    return [p for p in ranked if p in present] + [p for p in present if p not in ranked]


# Where a claim's label may sit around its point (offset in points, alignment), in order of
# preference; the first that overlaps no label placed before is taken.
LABEL_PLACES = ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"))


def _label_places(ax: plt.Axes, run: pd.DataFrame, fontsize: float = 8) -> list[tuple]:
    """A greedy place per label so that close points (C9 and C14, say) keep readable labels.

    Hand-written: no label-repelling library is among the dependencies, and four candidate
    places are enough for fifteen points. Text boxes are estimated in display units from the
    font size (0.6 em per character)."""
    points = ax.transData.transform(run[["paper", "ours"]].to_numpy(dtype=float))
    scale = ax.figure.dpi / 72
    boxes: list[tuple[float, float, float, float]] = []
    chosen = []
    for (px, py), label in zip(points, run["id"]):
        w, h = 0.6 * fontsize * len(str(label)) * scale, fontsize * scale
        for dx, dy, ha in LABEL_PLACES:
            x0 = px + dx * scale - (w if ha == "right" else 0)
            box = (x0, py + dy * scale, x0 + w, py + dy * scale + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in boxes):
                break
        else:
            dx, dy, ha = LABEL_PLACES[0]
            x0 = px + dx * scale
            box = (x0, py + dy * scale, x0 + w, py + dy * scale + h)
        boxes.append(box)
        chosen.append((dx, dy, ha))
    return chosen


def plot_claims(points: pd.DataFrame, path: Path, profile: str) -> Path:
    """The paper's margin of each claim against ours, one point per claim, coloured by
    verdict. Two scales: Kinetics margins are about a point, the proxy's up to fifty.

    ``points``: one row per claim with ``id``, ``verdict``, ``paper`` and ``ours`` (NaN when
    not run)."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    run = points.dropna(subset=["ours"])
    for verdict, colour in VERDICT_COLOURS.items():
        group = run[run["verdict"] == verdict]
        if len(group):
            ax.scatter(group["paper"], group["ours"], s=60, color=colour, edgecolor="0.2",
                       zorder=3, label=verdict)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.axvline(0, color="0.4", lw=0.8)
    not_run = list(points.loc[points["ours"].isna(), "id"])
    ax.set_xlabel("the paper's margin (top-1 points, Kinetics)")
    ax.set_ylabel(f"our margin (mean over seeds, top-1 points, {profile})")
    held = int((points["verdict"] == "holds").sum())
    ax.set_title(f"The paper's claims on the {profile} runs: {held} of {len(points)} hold"
                 + (f"\nnot run: {', '.join(not_run)}" if not_run else ""))
    if len(run):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="verdict")
    fig.tight_layout()
    ax.autoscale_view()  # labels are placed in display units, on the final axes
    for (_, r), (dx, dy, ha) in zip(run.iterrows(), _label_places(ax, run)):
        ax.annotate(r["id"], (r["paper"], r["ours"]), textcoords="offset points",
                    xytext=(dx, dy), ha=ha, fontsize=8)
    return save_figure(fig, path, dpi=120)
