# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # nlrepro: what the Table 2 runs say
#
# Reads `results/<profile>/runs.csv` (written by `nlrepro collect`, one row per finished run)
# and shows, for every reproduced Table 2 (a)–(g), our numbers beside the paper's, then the
# questions a table hides: how accuracy moves along each axis of the study (instantiation,
# stage, number of blocks, scope), how far seeds spread, how training went, and what the
# accuracy cost in time and multiply-adds.
#
# The tables come from `nlrepro.report.tables` (the same code as `nlrepro table`), so the notebook and
# the rendered tables cannot disagree.  Without a `runs.csv` the finished run folders under
# `RESULTS` are collected in memory (`nlrepro collect` without writing); the notebook never
# writes anything.  On the **proxy** profile the numbers are a synthetic
# miniature (docs/PROXY.md), never Kinetics numbers: compare *gains*, not levels.
#
# `jupytext` pairs this file with `analysis.ipynb`; edit the `.py` (the source of truth) and
# run `jupytext --sync notebooks/analysis.py`.

# %% tags=["parameters"]
# Folder holding <PROFILE>/runs.csv (or the run folders); relative to the repository root.
# tests/fixtures/results holds 15 tiny real proxy runs of Table 2a (no runs.csv: collected here).
RESULTS = "results"
PROFILE = "proxy"
# Shown instead when RESULTS holds no finished run yet (a fresh clone): the 15 tiny real proxy
# runs of Table 2a committed for the golden test.  None: stop with an error instead.
EXAMPLE_RESULTS = "tests/fixtures/results"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

import nlrepro
from nlrepro.report.collect import collect
from nlrepro.config import read_config
from nlrepro.info import model_info
from nlrepro.sweep import expand, grid_path, load_grid
from nlrepro.report.tables import add_cost, build_table, display_frame, footnotes, load_paper, to_markdown

ROOT = Path(nlrepro.__file__).resolve().parent.parent
results = Path(RESULTS) if Path(RESULTS).is_absolute() else ROOT / RESULTS
runs_csv = results / PROFILE / "runs.csv"
if runs_csv.is_file():
    runs = pd.read_csv(runs_csv, dtype={"table": str})
    source = str(runs_csv)
else:
    runs = collect(results, PROFILE)
    source = f"{results / PROFILE} (no runs.csv: run folders collected in memory)"
if runs.empty and EXAMPLE_RESULTS:
    print(f"no finished run in {results / PROFILE} yet: showing the example results in "
          f"{EXAMPLE_RESULTS} (tiny proxy runs; run `make table2a` for your own)")
    results = ROOT / EXAMPLE_RESULTS
    runs = collect(results, PROFILE)
    source = f"{results / PROFILE} (example results, collected in memory)"
if runs.empty:
    raise FileNotFoundError(f"no finished run in {results / PROFILE}: run a table first "
                            f"(`make table2a`), or set RESULTS to a folder holding "
                            f"{PROFILE}/runs.csv or finished run folders")
runs["table"] = runs["table"].astype(str)
sns.set_theme(style="whitegrid", context="notebook")
print(f"{len(runs)} finished runs in {source}, tables: {sorted(runs['table'].unique())}")

# %% [markdown]
# ## Every table beside the paper
# Exactly what `nlrepro table` renders (`paper_tables/<profile>/table2X.md`): `n` is
# finished/expected runs; missing runs show as "—".  Δ is the gain over the table's baseline
# row, which is what a proxy can reproduce.

# %%
paper = load_paper()
grids, specs, tables = {}, {}, {}
for table in sorted(runs["table"].unique()):
    grids[table] = load_grid(grid_path(table))
    specs[table] = expand(grids[table], PROFILE, results)
    tables[table] = build_table(grids[table], runs, paper, specs[table])
    cost = bool(grids[table].get("cost"))
    shown = add_cost(tables[table], specs[table]) if cost else tables[table]
    title = f"Table {table} ({PROFILE}): {grids[table].get('title', '')}".rstrip(": ")
    display(Markdown(to_markdown(title, display_frame(shown, cost),
                                 footnotes(grids[table], shown, runs, specs[table], PROFILE))))

# %% [markdown]
# ### Our gains against the paper's
# One point per non-baseline row: the paper's Δ top-1 (Kinetics) on x, ours on y.  Agreement in
# sign is what the proxy can show; the diagonal would be agreement in size.

# %%
gains = pd.concat([t.assign(table=k) for k, t in tables.items()], ignore_index=True)
gains = gains[~gains["baseline"] & gains["delta"].notna()].astype({"delta": float})
fig, ax = plt.subplots(figsize=(6, 4.5))
if len(gains):
    sns.scatterplot(data=gains, x="paper_delta", y="delta", hue="table", style="depth", s=70,
                    ax=ax)
    for _, r in gains.iterrows():
        ax.annotate(r["row"], (r["paper_delta"], r["delta"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
ax.axhline(0, color="0.6", lw=0.8)
ax.axvline(0, color="0.6", lw=0.8)
ax.set_xlabel("paper: Δ top-1 over baseline (Kinetics)")
ax.set_ylabel(f"ours: Δ top-1 over baseline ({PROFILE})")
ax.set_title("gain over the baseline row")
plt.show()

# %% [markdown]
# ## Accuracy along each axis of the study
# Each panel uses the runs of the table that varies that axis (2a instantiation, 2b stage,
# 2c number of blocks, 2d scope); dots are seeds, bars the mean ± std.  "none" is the baseline
# without a non-local block.

# %%
AXES = {"instantiation": "2a", "stages": "2b", "blocks": "2c", "scope": "2d"}
present = {axis: t for axis, t in AXES.items() if t in set(runs["table"])}
if present:
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.8), squeeze=False)
    for ax, (axis, table) in zip(axes[0], present.items()):
        data = runs[runs["table"] == table].copy()
        data[axis] = data[axis].fillna("").astype(str).replace({"": "none", "0": "none"})
        order = list(dict.fromkeys(data[axis]))
        depths = data["depth"].nunique() > 1  # R50 and R101 side by side when both ran
        hue = {"hue": "depth", "dodge": 0.4} if depths else {"color": "C0"}
        sns.stripplot(data=data, x=axis, y="top1_video", order=order, size=4, color="0.3",
                      dodge=depths, legend=False, **({"hue": "depth", "palette": "dark:0.3"}
                                                     if depths else {}), ax=ax)
        sns.pointplot(data=data, x=axis, y="top1_video", order=order, errorbar="sd",
                      linestyle="none", capsize=0.1, ax=ax, **hue)
        ax.set_title(f"Table {table}: {axis}")
        ax.set_ylabel("top-1 (video, %)")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    plt.show()
else:
    print("no run of tables 2a-2d: nothing to plot along the axes")

# %% [markdown]
# ## Seed spread
# The proxy's non-local runs "take off" at different epochs (docs/PROXY.md), so a row's spread
# can dwarf its gain: read a gain only next to the std of both rows.

# %%
spread = (runs.groupby(["table", "row", "depth"], sort=False)["top1_video"]
          .agg(n="count", mean="mean", std="std", min="min", max="max").reset_index())
spread["range"] = spread["max"] - spread["min"]
display(spread.round(2))
runs["label"] = runs["table"] + ": " + runs["row"] + " (R" + runs["depth"].astype(str) + ")"
fig, ax = plt.subplots(figsize=(7, 0.32 * runs["label"].nunique() + 1.2))
sns.stripplot(data=runs, y="label", x="top1_video", hue="seed", palette="deep", size=6, ax=ax)
ax.set_xlabel("top-1 (video, %) per seed")
ax.set_ylabel("")
plt.show()

# %% [markdown]
# ## Training curves
# Validation and training clip accuracy and the training loss per epoch from each run's
# `metrics.csv` (the Lightning CSV log, whole history across resumes; a metric nobody logged is
# left out).  Runs without a log are skipped.


# %%
def run_dir_of(row: pd.Series) -> Path:
    """The run folder: as recorded, or where it sits under RESULTS (moved fixtures)."""
    recorded = Path(str(row["run_dir"]))
    return recorded if recorded.is_dir() else results / PROFILE / row["table"] / row["run_id"]


curves = []
for _, r in runs.iterrows():
    csv = run_dir_of(r) / "metrics.csv"
    if not csv.is_file():
        continue
    m = pd.read_csv(csv)
    per_epoch = m.groupby("epoch").mean(numeric_only=True).reset_index()
    per_epoch["label"] = r["label"]
    per_epoch["table"] = r["table"]
    per_epoch["seed"] = r["seed"]
    curves.append(per_epoch)
if curves:
    curves = pd.concat(curves, ignore_index=True)
    curves["epoch"] += 1
    for split in ("val", "train"):  # logged as fractions; the tables use percent
        if f"{split}/top1_clip" in curves:
            curves[f"{split} top-1 (clip, %)"] = 100 * curves[f"{split}/top1_clip"]
    for metric in ("val top-1 (clip, %)", "train top-1 (clip, %)", "train/loss"):
        if metric not in curves or curves[metric].isna().all():
            continue
        g = sns.relplot(data=curves, x="epoch", y=metric, hue="label", col="table", kind="line",
                        errorbar="sd", col_wrap=min(3, curves["table"].nunique()), height=3.2,
                        facet_kws={"sharey": False})
        g.figure.suptitle(f"{metric} per epoch (mean ± std over seeds)", y=1.02)
        plt.show()
else:
    print("no metrics.csv found next to the runs: no training curves")

# %% [markdown]
# ## Compute against accuracy
# Multiply-adds per clip (`nlrepro info`: the model on PyTorch's meta device under
# `torch.utils.flop_counter`) of each run's own `config.yaml`, and measured training time.  A
# gain is worth its cost when it lies above the baseline's point to the left.

# %%
gmacs = {}
for _, r in runs.drop_duplicates("run_id").iterrows():
    path = run_dir_of(r) / "config.yaml"
    try:
        gmacs[r["run_id"]] = model_info(read_config(path))["gflops"]
    except (OSError, ValueError) as err:  # no config, or one this code cannot build: say so
        print(f"run {r['run_id']}: no GMACs ({err})")
runs["GMACs per clip"] = runs["run_id"].map(gmacs)
runs["train minutes"] = runs["train_seconds"] / 60
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, x in zip(axes, ("GMACs per clip", "train minutes")):
    sns.scatterplot(data=runs, x=x, y="top1_video", hue="table", style="instantiation", s=60,
                    ax=ax)
    ax.set_ylabel("top-1 (video, %)")
axes[0].get_legend().remove()
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
fig.tight_layout()
plt.show()
cost = (runs.groupby(["table", "row", "depth"], sort=False)
        .agg(top1=("top1_video", "mean"), gmacs=("GMACs per clip", "first"),
             train_min=("train minutes", "mean"), clips_per_s=("throughput_clips_per_s", "mean"))
        .reset_index())
display(cost.round(3))
