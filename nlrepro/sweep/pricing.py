"""What a sweep costs before it runs: GPU-hours, wall-clock days and SLURM requeues per run.

``nlrepro sweep --dry-run`` prices the runs it would launch.  Per run:

* model size from ``nlrepro.info.model_info`` (params, GMACs per clip; cached per model);
* iterations = epochs × ⌈train videos / global batch⌉ (capped by ``trainer.max_steps`` and
  ``limit_train_batches``), global batch = ``data.batch_size`` × GPUs per run; the train videos
  are counted in the train list when it exists, else the proxy's ``num_train``, else
  Kinetics-400's 234,643 (the paper's 400k iterations at batch 64 ≈ 109 epochs);
* GPU-hours from ``experiments/throughput.yaml``: training clips/s per GPU of a reference
  model (C2D R50, 32×224²), scaled by reference GMACs / the run's GMACs (compute-bound
  assumption).  Evaluation is added in training-clip equivalents: a forward pass costs about
  1/3 of a training step (backward ≈ 2 forwards), the per-epoch validation sees one clip per
  video and the test ``num_clips × num_crops`` views of ``test_crop²`` (× (test_crop/crop)²);
* launcher consequences: wall-clock hours = GPU-hours / GPUs per run, requeues =
  ⌈wall / timeout_min⌉ − 1, and the sweep's wall-clock days when SLURM starts the array's
  runs in order, ``array_parallelism`` at a time (the local launcher runs one at a time).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from nlrepro.config import ConfigError, LauncherConfig, RunConfig, to_dict
from nlrepro.info import model_info

THROUGHPUT_YAML = Path(__file__).resolve().parents[2] / "experiments" / "throughput.yaml"
KINETICS_TRAIN_VIDEOS = 234_643  # Kinetics-400 train split as the paper used it (SPEC)
KINETICS_VAL_VIDEOS = 19_761     # VNL's validation denominator (SPEC)
FORWARD_FRACTION = 1.0 / 3.0     # forward-only pass / training step (backward ≈ 2× forward)
SOURCES = ("estimate", "measured")


# ---- throughput table ------------------------------------------------------------------
def load_throughput(path: Path | str | None = None) -> dict[str, Any]:
    """Read and check ``experiments/throughput.yaml`` (data only: ``yaml.safe_load``)."""
    path = Path(path) if path else THROUGHPUT_YAML
    if not path.is_file():
        raise ConfigError(f"throughput table {str(path)!r} not found")
    table = yaml.safe_load(path.read_text()) or {}
    check_throughput(table, str(path))
    return table


def check_throughput(table: dict[str, Any], where: str = "throughput table") -> None:
    """Every GPU needs a positive ``clips_per_s``, a ``source`` and a one-line reasoning."""
    ref = table.get("reference") or {}
    if not isinstance(ref.get("gflops"), (int, float)) or ref["gflops"] <= 0:
        raise ConfigError(f"{where}: reference.gflops must be a positive number (GMACs per "
                          f"clip of the reference model), got {ref.get('gflops')!r}")
    gpus = table.get("gpus")
    if not isinstance(gpus, dict) or not gpus:
        raise ConfigError(f"{where}: 'gpus' must map GPU types to their throughput")
    for name, entry in gpus.items():
        rate = (entry or {}).get("clips_per_s")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
            raise ConfigError(f"{where}: gpus.{name}.clips_per_s must be > 0, got {rate!r}")
        if entry.get("source") not in SOURCES:
            raise ConfigError(f"{where}: gpus.{name}.source: {entry.get('source')!r} is not "
                              f"valid; choose one of {list(SOURCES)}")
        if not str(entry.get("reasoning", "")).strip():
            raise ConfigError(f"{where}: gpus.{name} needs a 'reasoning' for its number")
    default = table.get("default")
    if default is not None:
        gpu_entry(table, default)


def gpu_entry(table: dict[str, Any], gpu: str) -> dict[str, Any]:
    """The table's entry for ``gpu`` (case-insensitive); ``ConfigError`` naming valid types."""
    for name, entry in table["gpus"].items():
        if name.lower() == str(gpu).lower():
            return {"name": name, **entry}
    raise ConfigError(f"unknown GPU type {gpu!r}; valid types: {', '.join(sorted(table['gpus']))}"
                      " (experiments/throughput.yaml)")


def pick_gpu(table: dict[str, Any], launcher: LauncherConfig, gpu: str | None = None) -> str:
    """``gpu`` if given, else a table GPU named in ``launcher.constraint``, else the default."""
    if gpu:
        return gpu_entry(table, gpu)["name"]
    constraint = (launcher.constraint or "").lower()
    for name in table["gpus"]:
        if name.lower() in constraint:
            return name
    default = table.get("default") or next(iter(table["gpus"]))
    return gpu_entry(table, default)["name"]


# ---- per-run arithmetic ----------------------------------------------------------------
def gpus_per_run(cfg: RunConfig, launcher: LauncherConfig) -> int:
    """``trainer.devices`` × ``num_nodes``; "auto" means the launcher's GPUs per node (≥ 1)."""
    devices = cfg.trainer.devices
    per_node = devices if isinstance(devices, int) and devices > 0 else \
        max(1, launcher.gpus_per_node)
    return per_node * max(1, cfg.trainer.num_nodes)


def count_list(path: Path, header: bool = False) -> int | None:
    """Non-empty lines of a video list (None when it does not exist)."""
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return max(0, len(lines) - int(header))


def dataset_sizes(cfg: RunConfig) -> dict[str, Any]:
    """Train / val / test video counts: the lists if they exist, else the profile's numbers."""
    d = cfg.data
    header = d.list_format == "kinetics_csv"
    root = Path(d.root)
    fallback = {"train": KINETICS_TRAIN_VIDEOS, "val": KINETICS_VAL_VIDEOS,
                "test": KINETICS_VAL_VIDEOS}
    source = "kinetics-400"
    if d.proxy is not None:
        fallback = {"train": d.proxy.num_train, "val": d.proxy.num_val, "test": d.proxy.num_test}
        source = "proxy config"
    out: dict[str, Any] = {}
    for split, name in (("train", d.train_list), ("val", d.val_list), ("test", d.test_list)):
        n = count_list(root / name, header)
        out[split] = fallback[split] if n is None else n
        out[f"{split}_source"] = source if n is None else "list"
    return out


def steps_per_epoch(cfg: RunConfig, train_videos: int, global_batch: int) -> int:
    """Optimiser steps in one epoch (``limit_train_batches`` applied, as Lightning does)."""
    per_epoch = math.ceil(train_videos / global_batch)
    limit = cfg.trainer.limit_train_batches
    return int(per_epoch * limit) if isinstance(limit, float) else min(per_epoch, limit)


def iterations(cfg: RunConfig, train_videos: int, global_batch: int) -> int:
    """Optimiser steps of a run: epochs × steps per epoch, capped by ``max_steps``."""
    t = cfg.trainer
    steps = steps_per_epoch(cfg, train_videos, global_batch) * max(0, t.max_epochs)
    if t.max_steps > 0:
        steps = min(steps, t.max_steps) if t.max_epochs >= 0 else t.max_steps
    return steps


def eval_clip_equivalents(cfg: RunConfig, sizes: dict[str, Any], epochs: int) -> float:
    """Validation (every ``check_val_every_n_epoch``) and the multi-view test, in training clips."""
    d, t = cfg.data, cfg.trainer
    val_rounds = epochs // max(1, t.check_val_every_n_epoch)
    val = sizes["val"] * val_rounds
    test = sizes["test"] * d.num_clips * d.num_crops * (d.test_crop / d.crop) ** 2
    precise_bn = t.precise_bn_batches * d.batch_size
    return FORWARD_FRACTION * (val + test + precise_bn)


_MODEL_CACHE: dict[str, dict[str, Any]] = {}


def cached_model_info(cfg: RunConfig) -> dict[str, Any]:
    """``model_info`` once per distinct (model, frames, crop): counting FLOPs takes seconds."""
    key = json.dumps([to_dict(cfg.model), cfg.data.frames, cfg.data.crop], sort_keys=True)
    if key not in _MODEL_CACHE:
        info = model_info(cfg)  # meta device: no weights read, no memory used
        _MODEL_CACHE[key] = {"params": info["params"], "gflops": info["gflops"]}
    return _MODEL_CACHE[key]


def schedule(walls_h: list[float], slots: int) -> list[tuple[float, float]]:
    """(start, end) hours of runs started in order on ``slots`` parallel slots (a job array)."""
    free = [0.0] * max(1, slots)
    out = []
    for wall in walls_h:
        i = min(range(len(free)), key=free.__getitem__)
        start = free[i]
        free[i] = start + wall
        out.append((start, free[i]))
    return out


def price_runs(configs: list[RunConfig], launcher: LauncherConfig,
               throughput_table: dict[str, Any], gpu: str | None = None) -> Any:
    """One row per run: size, iterations, clips, GPU-hours, wall-clock, requeues, schedule.

    ``gpu`` picks the throughput entry (default: ``launcher.constraint`` or the table's
    ``default``).  ``df.attrs`` keeps the GPU type, the parallelism and the reference.
    """
    import pandas as pd

    check_throughput(throughput_table)
    gpu_name = pick_gpu(throughput_table, launcher, gpu)
    entry = gpu_entry(throughput_table, gpu_name)
    ref_gflops = float(throughput_table["reference"]["gflops"])
    rows = []
    for cfg in configs:
        info = cached_model_info(cfg)
        sizes = dataset_sizes(cfg)
        n_gpus = gpus_per_run(cfg, launcher)
        batch = cfg.data.batch_size * n_gpus
        steps = iterations(cfg, sizes["train"], batch)
        clips = steps * batch
        epochs = math.ceil(steps / max(1, steps_per_epoch(cfg, sizes["train"], batch)))
        rate = entry["clips_per_s"] * ref_gflops / info["gflops"]  # clips/s per GPU
        gpu_h = (clips + eval_clip_equivalents(cfg, sizes, epochs)) / rate / 3600.0
        wall_h = gpu_h / n_gpus
        requeues = max(0, math.ceil(wall_h * 60.0 / launcher.timeout_min) - 1)
        rows.append({
            "arch": cfg.model.arch, "depth": cfg.model.depth,
            "frames": cfg.data.frames, "params_m": info["params"] / 1e6,
            "gflops": info["gflops"], "train_videos": sizes["train"],
            "train_videos_source": sizes["train_source"], "global_batch": batch,
            "iterations": steps, "epochs": epochs, "clips": clips, "gpus": n_gpus,
            "clips_per_s_per_gpu": rate, "gpu_hours": gpu_h, "wall_hours": wall_h,
            "requeues": requeues, "requeues_ok": requeues <= launcher.max_requeues,
        })
    df = pd.DataFrame(rows)
    slots = launcher.array_parallelism if launcher.name == "slurm" else 1
    times = schedule(list(df["wall_hours"]) if len(df) else [], slots)
    df["start_day"] = [s / 24.0 for s, _ in times]
    df["end_day"] = [e / 24.0 for _, e in times]
    df.attrs.update({"gpu": gpu_name, "source": entry["source"], "parallelism": slots,
                     "timeout_min": launcher.timeout_min,
                     "max_requeues": launcher.max_requeues,
                     "reference": throughput_table["reference"].get("model", "reference")})
    return df


# ---- printing --------------------------------------------------------------------------
PLAN_COLUMNS = {"row": "row", "seed": "seed", "arch": "arch", "depth": "R", "frames": "T",
                "params_m": "params (M)", "gflops": "GMACs", "iterations": "iters",
                "gpus": "GPUs", "gpu_hours": "GPU-h", "wall_hours": "wall h",
                "requeues": "requeues", "end_day": "done by day"}


def totals(df: Any) -> dict[str, float]:
    """Sums over the plan: GPU-hours/days, the sweep's wall-clock days, requeues."""
    if not len(df):
        return {"runs": 0, "gpu_hours": 0.0, "gpu_days": 0.0, "wall_days": 0.0, "requeues": 0}
    gpu_h = float(df["gpu_hours"].sum())
    return {"runs": int(len(df)), "gpu_hours": gpu_h, "gpu_days": gpu_h / 24.0,
            "wall_days": float(df["end_day"].max()), "requeues": int(df["requeues"].sum())}


def format_plan(df: Any, title: str = "This sweep") -> str:
    """The priced plan as a table plus one line of totals ("Table 2c costs N GPU-days")."""
    cols = [c for c in PLAN_COLUMNS if c in df.columns]
    shown = df[cols].rename(columns=PLAN_COLUMNS)
    lines = [shown.to_string(index=False, float_format=lambda v: f"{v:,.1f}")] if len(df) else []
    t = totals(df)
    a = df.attrs
    gpu = a.get("gpu", "?")
    lines.append(
        f"{title} costs {t['gpu_days']:,.1f} GPU-days ({t['gpu_hours']:,.0f} {gpu} GPU-hours, "
        f"{a.get('source', '?')} throughput) for {t['runs']} runs; wall-clock "
        f"{t['wall_days']:,.1f} days with {a.get('parallelism', 1)} run(s) at a time; "
        f"{t['requeues']} requeue(s) at timeout_min={a.get('timeout_min')}.")
    if len(df) and not df["requeues_ok"].all():
        bad = int((~df["requeues_ok"]).sum())
        lines.append(f"WARNING: {bad} run(s) need more than launcher.max_requeues="
                     f"{a.get('max_requeues')} requeues: raise it or launcher.timeout_min.")
    return "\n".join(lines)
