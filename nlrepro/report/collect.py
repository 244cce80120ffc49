"""Every run's ``summary.json`` -> one tidy DataFrame -> ``results/<profile>/runs.csv``.

One row per (run, paper row) with the table, row label, depth, seed, every
config axis of Table 2, the metrics and the cost.  Only finished runs appear;
the table renderer compares against the grid to show what is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from nlrepro.config import add_profile_argument
from nlrepro.proxy.timeline import KINDS as TIMELINE_KINDS
from nlrepro.proxy.truth import test_kinds
from nlrepro.run import rundir
from nlrepro.utils import atomic_write_text

COLUMNS = ["table", "row", "depth", "seed", "run_id", "arch", "instantiation", "stages",
           "blocks", "scope", "frames", "top1_video", "top5_video", "val_top1_clip",
           "epochs", "steps", "train_seconds", "throughput_clips_per_s", "peak_rss_mb",
           "videos", "videos_failed", "views_per_video", "train_retries", "reused", "run_dir"]
# The relations proxies: test top-1 over the videos of each relation kind (empty elsewhere;
# the timeline kinds include the relations ones), and over the videos whose cue the clip
# shows ("in view": all but the timeline kinds that happen before a short clip).
KIND_COLUMNS = [f"top1_{k}" for k in TIMELINE_KINDS]
INVIEW_COLUMN = "top1_inview"


def kind_accuracy(run_dir: Path, data_root: str, cache: dict) -> dict[str, float]:
    """Top-1 per relation kind and over the videos in view, from the run's per-video test
    results; {} when the dataset has no kinds or the run kept no per-video results."""
    if data_root not in cache:
        cache[data_root] = test_kinds(Path(data_root))
    kinds = cache[data_root]
    path = run_dir / rundir.TEST_VIDEOS
    if kinds is None or not path.is_file():
        return {}
    videos = pd.read_csv(path)
    videos = videos[(videos["failed"] == 0) & (videos["video_idx"] < len(kinds))]
    videos = videos.assign(kind=[kinds[i][0] for i in videos["video_idx"]],
                           inview=[kinds[i][1] for i in videos["video_idx"]],
                           ok=videos["top1"] == videos["label"])
    out = {f"top1_{k}": 100.0 * float(v) for k, v in videos.groupby("kind")["ok"].mean().items()}
    out[INVIEW_COLUMN] = 100.0 * float(videos.loc[videos["inview"], "ok"].mean())
    return out


def _row(summary: dict, spec: dict, label: str, run_dir: Path) -> dict:
    cfg = summary["config"]
    nl = cfg["model"]["nonlocal"]
    m = summary.get("metrics", {})
    videos = summary.get("videos", {})
    blocks = nl["blocks"]
    return {
        "table": str(spec["table"]), "row": label, "depth": int(cfg["model"]["depth"]),
        "seed": int(summary["seed"]), "run_id": summary["run_id"],
        "arch": cfg["model"]["arch"],
        "instantiation": nl["instantiation"] if blocks else "none",
        "stages": "+".join(nl["stages"] or []) if blocks else "",
        "blocks": json.dumps(blocks) if isinstance(blocks, dict) else int(blocks),
        "scope": nl["scope"] if blocks else "", "frames": int(cfg["data"]["frames"]),
        "top1_video": m.get("test/top1_video"), "top5_video": m.get("test/top5_video"),
        "val_top1_clip": m.get("val/top1_clip"),
        "epochs": summary.get("epochs"), "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "throughput_clips_per_s": summary.get("throughput_clips_per_s"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "videos": m.get("test/videos"), "videos_failed": m.get("test/videos_failed"),
        "views_per_video": m.get("test/views_per_video"),
        "train_retries": videos.get("train_retries"),
        "reused": "reused_from" in summary, "run_dir": str(run_dir),
    }


def collect(results: Path, profile: str) -> pd.DataFrame:
    """Glob ``<results>/<profile>/<table>/<run>/summary.json`` into one DataFrame."""
    rows, cache = [], {}
    for run_dir in rundir.done_runs(results, profile):
        summary = rundir.read_summary(run_dir)
        spec = rundir.read_row(run_dir)
        source = Path(summary.get("reused_from") or run_dir)
        kinds = kind_accuracy(source, summary["config"]["data"]["root"], cache)
        for label in spec["labels"]:
            rows.append({**_row(summary, spec, label, run_dir), **kinds})
    columns = COLUMNS + ([c for c in KIND_COLUMNS + [INVIEW_COLUMN] if any(c in r for r in rows)])
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["table", "depth", "row", "seed"], kind="stable").reset_index(drop=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_profile_argument(parser)
    parser.add_argument("--results", type=Path, default=Path("results"))


def main(args: argparse.Namespace) -> int:
    df = collect(args.results, args.profile)
    out = Path(args.results) / args.profile / "runs.csv"
    atomic_write_text(out, df.to_csv(index=False))
    print(f"{len(df)} finished runs -> {out}")
    return 0
