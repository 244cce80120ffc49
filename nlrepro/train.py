"""One run: config -> fit -> (precise BN) -> multi-view test -> ``summary.json`` + ``done``.

A run lives in a fixed folder (no timestamps, no auto-incremented versions) so
that re-running the same command, or a requeued SLURM job, resumes from
``checkpoints/last.ckpt``; a run with a ``done`` marker is never trained again.

Run folder::

    config.yaml          resolved config (what ran)
    checkpoints/last.ckpt
    metrics.csv          Lightning CSVLogger, whole history across resumes
    summary.json         written atomically at the end, then ``done``
    error.txt            traceback of the last crash, if any
    lock                 flock'ed by the process training the run (nlrepro/locks.py)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from nlrepro.config import RunConfig, config_hash, load_config, read_config, save_config, to_dict
from nlrepro.locks import run_lock
from nlrepro.resume import resume_checkpoint
from nlrepro.utils import (atomic_write_json, atomic_write_text, git_commit, library_versions,
                           remove_dead)

log = logging.getLogger("nlrepro.train")

CKPT_DIR = "checkpoints"
LAST = "last.ckpt"


def run_dir_for(cfg: RunConfig) -> Path:
    """Where ``nlrepro train`` puts a run: ``<output_dir>/<config hash>``."""
    return Path(cfg.output_dir) / config_hash(cfg)


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> Path:
    """Write ``config.yaml`` (once; a different config in the same folder is an error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if path.exists():
        old = read_config(path)
        if config_hash(old) != config_hash(cfg):
            raise ValueError(f"{run_dir} already holds a run with another config "
                             f"({config_hash(old)} != {config_hash(cfg)})")
    else:
        save_config(cfg, path)
    return run_dir


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / "done").is_file()


def train_run_dir(run_dir: Path) -> dict:
    """Train (or resume, or skip) the run described by ``run_dir/config.yaml``."""
    run_dir = Path(run_dir)
    if is_done(run_dir):
        return read_summary(run_dir) or {}
    with run_lock(run_dir):  # waits while another process trains this run
        if is_done(run_dir):  # it finished while we waited
            return read_summary(run_dir) or {}
        for folder in (run_dir, run_dir / CKPT_DIR):  # what killed attempts left half-written
            remove_dead(folder)
        cfg = read_config(run_dir / "config.yaml")
        try:
            summary = _train(cfg, run_dir)
        except BaseException:
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
            raise
        (run_dir / "error.txt").unlink(missing_ok=True)
        return summary


def train(cfg: RunConfig, run_dir: Path | None = None) -> dict:
    """Train the run for ``cfg`` in ``run_dir`` (default: ``<output_dir>/<hash>``)."""
    run_dir = prepare_run_dir(cfg, Path(run_dir) if run_dir else run_dir_for(cfg))
    return train_run_dir(run_dir)


def _elapsed_callback(run_dir: Path, before: float) -> Any:
    """Saves the training time so far after every epoch, so a killed attempt still counts."""
    from lightning.pytorch.callbacks import Callback

    class _Elapsed(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.start = time.time()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                _save_elapsed(run_dir, before + time.time() - self.start)

    return _Elapsed()


def _callbacks(cfg: RunConfig, run_dir: Path) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from nlrepro.progress import progress_callback

    # save_top_k=1 without a monitor keeps the newest epoch's file; Lightning 2.6 writes
    # last.ckpt only in a step that also saved a top-k checkpoint, so save_top_k=0 would leave
    # no last.ckpt until training ends and a killed run would start over.
    ckpt = ModelCheckpoint(dirpath=run_dir / CKPT_DIR, filename="epoch{epoch:03d}",
                           auto_insert_metric_name=False, save_last=True, save_top_k=1,
                           every_n_epochs=1, save_on_train_epoch_end=False)
    return [ckpt, LearningRateMonitor(logging_interval="epoch"), progress_callback()]


def _plugins() -> list:
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from nlrepro.checkpoint_io import AtomicCheckpointIO

    plugins: list = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        # submitit alone owns requeueing (it handles the signal and resubmits).
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _logged(run_dir: Path) -> Any:
    """history.csv (attempts before a resume) + metrics.csv (this attempt) as one frame,
    or None when neither holds anything yet."""
    import pandas as pd

    parts = [pd.read_csv(p) for p in (run_dir / "history.csv", run_dir / "metrics.csv")
             if p.is_file() and p.stat().st_size > 0]
    return pd.concat(parts, ignore_index=True) if parts else None


def _trim_history(run_dir: Path, last_ckpt: Path) -> None:
    """Before a resume: keep the CSV rows up to the checkpoint's epoch in history.csv.

    Lightning's CSVLogger starts a fresh metrics.csv; rows logged after the last
    checkpoint (the epoch that was cut short) are dropped, so the final history
    equals an uninterrupted run's.
    """
    import torch

    current = run_dir / "metrics.csv"
    if not current.is_file():
        return
    epoch = torch.load(last_ckpt, map_location="cpu", weights_only=True)["epoch"]
    df = _logged(run_dir)
    if df is not None and "epoch" in df:
        df = df[df["epoch"].isna() | (df["epoch"] <= epoch)]
    if df is not None:
        atomic_write_text(run_dir / "history.csv", df.to_csv(index=False))
    current.unlink()


def _finish_history(run_dir: Path) -> None:
    hist = run_dir / "history.csv"
    if hist.is_file():
        atomic_write_text(run_dir / "metrics.csv", _logged(run_dir).to_csv(index=False))
        hist.unlink()


def _last_logged(run_dir: Path) -> dict[str, float]:
    """The last logged value of every train/val metric in history.csv + metrics.csv."""
    df = _logged(run_dir)
    if df is None:
        return {}
    return {col: float(df[col].dropna().iloc[-1]) for col in df.columns
            if col.startswith(("train/", "val/")) and df[col].notna().any()}


def _peak_memory_mb() -> dict[str, float]:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _init_from(model: Any, path: str) -> dict[str, list[str]]:
    """Load weights from another run's checkpoint (Table 2g: from the 32-frame run)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    from nlrepro.models.frozen_bn import fold_bn_state_dict
    state = fold_bn_state_dict(state, model)  # BN entries -> folded frozen-BN ones (Table 2g)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return {"loaded": sorted(usable), "skipped": sorted(set(state) - set(usable)),
            "missing": sorted(set(own) - set(usable))}


def _train(cfg: RunConfig, run_dir: Path) -> dict:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from nlrepro.data.datamodule import VideoDataModule
    from nlrepro.module import VideoClassifier

    t0 = time.time()
    setup_logging()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = VideoDataModule(cfg)
    last = resume_checkpoint(run_dir / CKPT_DIR)  # None: a fresh start
    model = VideoClassifier.from_config(
        cfg, load_pretrained=last is None and not cfg.trainer.init_from)
    init_report = None
    if cfg.trainer.init_from and last is None:
        init_report = _init_from(model, cfg.trainer.init_from)
    if cfg.trainer.compile:
        model.model = torch.compile(model.model)
    resumed = last is not None
    if resumed:
        _trim_history(run_dir, last)
    elapsed_before = _load_elapsed(run_dir) if resumed else 0.0

    t = cfg.trainer
    trainer = L.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, max_steps=t.max_steps,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, deterministic=t.deterministic,
        logger=CSVLogger(save_dir=run_dir, name="", version=""),
        callbacks=[*_callbacks(cfg, run_dir), _elapsed_callback(run_dir, elapsed_before)],
        plugins=_plugins(),
        log_every_n_steps=t.log_every_n_steps, check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches, num_sanity_val_steps=0,
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False,
    )
    fit_start = time.time()
    # weights_only=True explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override it.
    trainer.fit(model, datamodule=dm, ckpt_path=str(last) if resumed else None,
                weights_only=True)
    fit_time = time.time() - fit_start
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not any(k.startswith("val/") for k in fit_metrics):
        # Killed after the final checkpoint: nothing was left to fit, so take the last
        # epoch's logged metrics instead of reporting none.
        fit_metrics = {**_last_logged(run_dir), **fit_metrics}
    _save_elapsed(run_dir, elapsed_before + fit_time)

    if t.precise_bn_batches > 0:
        from nlrepro.precise_bn import update_bn_stats

        clips = (b[0].to(model.device) for b in dm.train_dataloader())
        model.train()
        update_bn_stats(model, clips, t.precise_bn_batches)

    trainer.test(model, datamodule=dm, verbose=False)

    summary = _summary(cfg, run_dir, trainer, model, dm, fit_metrics, fit_time,
                       elapsed_before, time.time() - t0, init_report, resumed)
    if trainer.is_global_zero:
        _finish_history(run_dir)
        atomic_write_json(run_dir / "summary.json", summary)
        atomic_write_text(run_dir / "done", "")
    return summary


def _load_elapsed(run_dir: Path) -> float:
    path = run_dir / "elapsed.json"
    return json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0


def _save_elapsed(run_dir: Path, seconds: float) -> None:
    atomic_write_json(run_dir / "elapsed.json", {"train_seconds": seconds})


def _summary(cfg: RunConfig, run_dir: Path, trainer: Any, model: Any, dm: Any,
             fit_metrics: dict[str, float], fit_time: float, elapsed_before: float,
             wall: float, init_report: dict | None, resumed: bool) -> dict:
    # Accuracies in percent (torchmetrics logs fractions in metrics.csv); losses as they are.
    metrics = {k: 100.0 * v if "top" in k else v for k, v in fit_metrics.items()}
    metrics.update({k: float(v) for k, v in model.test_report.items()})
    train_clips = trainer.global_step * cfg.data.batch_size * trainer.world_size
    report = dm.failure_report() if hasattr(dm, "failure_report") else {}
    report["train_retries"] = model.train_retries
    return {
        "run_id": config_hash(cfg),
        "run_dir": str(run_dir),
        "profile": cfg.profile,
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "metrics": metrics,
        "epochs": int(trainer.fit_loop.epoch_progress.current.completed),
        "steps": int(trainer.global_step),
        "train_seconds": elapsed_before + fit_time,
        "wall_seconds_last_attempt": wall,
        "resumed": resumed,
        "throughput_clips_per_s": train_clips / max(1e-9, elapsed_before + fit_time),
        **_peak_memory_mb(),
        "videos": report,
        "init_from": init_report and {k: len(v) for k, v in init_report.items()},
        "versions": library_versions(),
        "git_commit": git_commit(),
        "world_size": trainer.world_size,
    }


# ---- command line ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="proxy", help="experiments/profiles/<name>.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. model.nonlocal.blocks=1")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder (default: <output_dir>/<config hash>)")


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is now, not as it was at set-up: ``nlrepro.cli.main``
    runs many times in one process (tests, notebooks), each with its own stderr."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging() -> None:
    """nlrepro's own log lines on stderr; Lightning keeps its own handler."""
    logger = logging.getLogger("nlrepro")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # The run folder holds config.yaml next to metrics.csv; resume keeps the history itself.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


def main(args: argparse.Namespace) -> int:
    setup_logging()
    cfg = load_config(args.profile, sets=args.sets)
    summary = train(cfg, args.run_dir)
    m = summary.get("metrics", {})
    print(json.dumps({"run_dir": summary.get("run_dir"),
                      "test/top1_video": m.get("test/top1_video"),
                      "test/top5_video": m.get("test/top5_video"),
                      "val/top1_clip": m.get("val/top1_clip"),
                      "train_seconds": round(summary.get("train_seconds", 0.0), 1)}, indent=2))
    return 0
