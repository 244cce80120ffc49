"""``nlrepro train``: the Lightning driver of one run.

config -> (proxy data and frame pre-training ensured) -> fit -> (precise BN) -> multi-view
test -> ``summary.json`` + ``done``, in the run folder that ``nlrepro.run.rundir`` owns.
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
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment

from nlrepro.config import RunConfig, add_profile_argument, add_set_argument, load_config, to_dict
from nlrepro.data.datamodule import VideoDataModule
from nlrepro.proxy.dataset import ensure_proxy_data
from nlrepro.proxy.pretrain import frames_weights
from nlrepro.run import rundir
from nlrepro.run.checkpoint_io import AtomicCheckpointIO
from nlrepro.run.identity import config_hash
from nlrepro.run.init_weights import load_init_weights
from nlrepro.run.module import VideoClassifier
from nlrepro.run.precise_bn import update_bn_stats
from nlrepro.run.progress import progress_callback
from nlrepro.run.resume import resume_checkpoint
from nlrepro.run.sync_bn import GlooSyncBatchNorm, synced_bn
from nlrepro.run.tracking import make_loggers, name_of
from nlrepro.utils import git_commit, library_versions, setup_logging

log = logging.getLogger("nlrepro.train")


def train_run_dir(run_dir: Path) -> dict:
    """Train (or resume, or skip) the run described by ``run_dir/config.yaml``."""
    run_dir = Path(run_dir)
    if rundir.is_done(run_dir):
        return rundir.read_summary(run_dir) or {}
    with rundir.run_lock(run_dir):  # waits while another process trains this run
        if rundir.is_done(run_dir):  # it finished while we waited
            return rundir.read_summary(run_dir) or {}
        rundir.remove_dead_temporaries(run_dir)
        cfg = rundir.read_run_config(run_dir)
        try:
            summary = _train(cfg, run_dir)
        except BaseException:
            rundir.record_error(run_dir, traceback.format_exc())
            raise
        rundir.clear_error(run_dir)
        return summary


def train(cfg: RunConfig, run_dir: Path | None = None) -> dict:
    """Train the run for ``cfg`` in ``run_dir`` (default: ``<output_dir>/<hash>``)."""
    run_dir = rundir.prepare_run_dir(cfg, Path(run_dir) if run_dir else rundir.run_dir_for(cfg))
    return train_run_dir(run_dir)


def _elapsed_callback(run_dir: Path, before: float) -> Any:
    """Saves the training time so far after every epoch, so a killed attempt still counts."""
    class _Elapsed(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.start = time.time()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                rundir.save_elapsed(run_dir, before + time.time() - self.start)

    return _Elapsed()


def _callbacks(cfg: RunConfig, run_dir: Path) -> list:
    # save_top_k=1 without a monitor keeps the newest epoch's file; Lightning 2.6 writes
    # last.ckpt only in a step that also saved a top-k checkpoint, so save_top_k=0 would leave
    # no last.ckpt until training ends and a killed run would start over.
    ckpt = ModelCheckpoint(dirpath=rundir.checkpoint_dir(run_dir), filename="epoch{epoch:03d}",
                           auto_insert_metric_name=False, save_last=True, save_top_k=1,
                           every_n_epochs=1, save_on_train_epoch_end=False)
    return [ckpt, LearningRateMonitor(logging_interval="epoch"), progress_callback()]


def _plugins() -> list:
    plugins: list = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        # submitit alone owns requeueing (it handles the signal and resubmits).
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _peak_memory_mb() -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _init_from(model: Any, path: str, fold_nonlocal_bn: bool) -> dict[str, list[str]]:
    """Load weights from another run's checkpoint (Table 2g: from the 32-frame run);
    ``ConfigError`` when they do not cover the model (run/init_weights.py)."""
    return load_init_weights(model, path, fold_nonlocal_bn=fold_nonlocal_bn)


def _on_cpu(cfg: RunConfig) -> bool:
    return cfg.trainer.accelerator == "cpu" or (cfg.trainer.accelerator == "auto"
                                                and not torch.cuda.is_available())


def _sync_bn(cfg: RunConfig) -> dict[str, bool]:
    """Lightning's own sync BN (torch's SyncBatchNorm) where it runs: on GPUs."""
    return {"sync_batchnorm": cfg.trainer.sync_batchnorm and not _on_cpu(cfg)}


def _sync_bn_plugins(cfg: RunConfig) -> list:
    """On CPUs torch's SyncBatchNorm refuses to run: the gloo-capable one instead."""
    return [GlooSyncBatchNorm()] if cfg.trainer.sync_batchnorm and _on_cpu(cfg) else []


def _is_first_process() -> bool:
    """Global rank 0, known before the Trainer exists: under ``srun`` every rank starts this
    script at once and only one may rewrite the run's CSV history.  Lightning's own DDP
    launcher starts ranks >= 1 with ``LOCAL_RANK`` set; SLURM sets ``SLURM_PROCID``."""
    return all(os.environ.get(var, "0") == "0"
               for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _train(cfg: RunConfig, run_dir: Path) -> dict:
    t0 = time.time()
    setup_logging()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    if cfg.data.proxy is not None:
        ensure_proxy_data(cfg)
    dm = VideoDataModule(cfg)
    last = resume_checkpoint(rundir.checkpoint_dir(run_dir))  # None: a fresh start
    load_pretrained = last is None and not cfg.trainer.init_from
    model = VideoClassifier.from_config(
        cfg, load_pretrained=load_pretrained,
        pretrained_path=frames_weights(cfg) if load_pretrained else None)
    init_report = None
    if cfg.trainer.init_from and last is None:
        init_report = _init_from(model, cfg.trainer.init_from,
                                 cfg.trainer.init_fold_nonlocal_bn)
    if cfg.trainer.precision in ("64-true", "64", 64):
        # Lightning restores a checkpoint before its precision plugin converts the module:
        # float32 parameters would round a resumed float64 run's weights once.
        model = model.double()
    if cfg.trainer.compile:
        model.model = torch.compile(model.model)
    resumed = last is not None
    if resumed and _is_first_process():
        epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        rundir.trim_history(run_dir, epoch)
    elapsed_before = rundir.load_elapsed(run_dir) if resumed else 0.0

    t = cfg.trainer
    trainer = L.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, max_steps=t.max_steps,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, deterministic=t.deterministic,
        **_sync_bn(cfg),
        logger=make_loggers(cfg, run_dir, name_of(cfg, run_dir)),
        callbacks=[*_callbacks(cfg, run_dir), _elapsed_callback(run_dir, elapsed_before)],
        plugins=[*_plugins(), *_sync_bn_plugins(cfg)],
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
        fit_metrics = {**rundir.last_logged(run_dir), **fit_metrics}
    if trainer.is_global_zero:
        rundir.save_elapsed(run_dir, elapsed_before + fit_time)

    bn_batches = 0
    if t.precise_bn_batches > 0:
        clips = (b[0].to(model.device, model.dtype) for b in dm.train_dataloader())
        model.train()
        with synced_bn(model, t.sync_batchnorm and trainer.world_size > 1):
            bn_batches = update_bn_stats(model, clips, t.precise_bn_batches)

    trainer.test(model, datamodule=dm, verbose=False)

    summary = _summary(cfg, run_dir, trainer, model, dm, fit_metrics, fit_time,
                       elapsed_before, time.time() - t0, init_report, resumed)
    summary["precise_bn_batches_used"] = bn_batches  # per rank; statistics pooled over ranks
    if trainer.is_global_zero:
        rundir.finish_history(run_dir)
        rundir.write_test_videos(run_dir, model.test_videos)
        rundir.finish(run_dir, summary)
    return summary


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
        "name": name_of(cfg, run_dir),
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
    add_profile_argument(parser)
    add_set_argument(parser, "override config keys, e.g. model.nonlocal.blocks=1")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder (default: <output_dir>/<config hash>)")


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
