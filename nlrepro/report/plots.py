"""Figures for a paper table (seaborn): ours vs the paper's, and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from nlrepro.run import rundir  # noqa: E402
from nlrepro.utils import save_figure  # noqa: E402


def plot_table(df: pd.DataFrame, grid: dict, title: str, path: Path) -> Path:
    """Left: our top-1 per row (mean ± std, seeds as dots). Right: Δ to the baseline,
    ours beside the paper's — a line across the axis for the stage/blocks tables.

    The same results give the same PNG: seaborn's jitter draws from numpy's global RNG, so
    it is seeded here (and the caller's state put back)."""
    import numpy as np

    state = np.random.get_state()
    np.random.seed(0)
    try:
        return _plot_table(df, grid, title, path)
    finally:
        np.random.set_state(state)


def _plot_table(df: pd.DataFrame, grid: dict, title: str, path: Path) -> Path:
    sns.set_theme(style="whitegrid", context="paper")
    df = df.copy()
    df["label"] = [f"{r} (R{d})" if df["depth"].nunique() > 1 else r
                   for r, d in zip(df["row"], df["depth"])]
    seeds = df[["label", "seeds"]].explode("seeds").dropna()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    order = list(df["label"])
    if len(seeds):
        sns.stripplot(data=seeds.astype({"seeds": float}), x="label", y="seeds", order=order,
                      ax=ax, color="0.3", size=4, jitter=0.1)
    ax.errorbar(range(len(df)), df["top1_mean"].astype(float), yerr=df["top1_std"].astype(float),
                fmt="o", color="C0", capsize=4, label="ours (mean ± std)")
    ax.set_xticks(range(len(df)), order, rotation=30, ha="right")
    ax.set_ylabel("top-1 (%), ours")
    ax.set_xlabel("")
    ax.set_title("our runs")
    ax.legend(loc="lower right")
    long = pd.concat([
        pd.DataFrame({"label": df["label"], "Δ top-1": df["paper_delta"].astype(float),
                      "source": "paper (Kinetics)", "depth": df["depth"]}),
        pd.DataFrame({"label": df["label"], "Δ top-1": df["delta"].astype(float),
                      "source": "ours", "depth": df["depth"]})])
    ax = axes[1]
    if grid.get("plot") == "line":
        sns.lineplot(data=long, x="label", y="Δ top-1", hue="source", style="depth",
                     markers=True, sort=False, ax=ax)
    else:
        sns.barplot(data=long, x="label", y="Δ top-1", hue="source", order=order, ax=ax)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax.set_xlabel("")
    ax.set_title("gain over the baseline row (top-1 points)")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_curves(runs: pd.DataFrame, grid: dict, path: Path) -> Path | None:
    """Validation clip accuracy per epoch for every row (the paper's Figure 4 style)."""
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
    data["epoch"] += 1
    data["val top-1 (clip, %)"] = 100 * data["val/top1_clip"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=data, x="epoch", y="val top-1 (clip, %)", hue="row", errorbar="sd", ax=ax)
    ax.set_title(f"Table {grid['table']}: validation accuracy during training")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
