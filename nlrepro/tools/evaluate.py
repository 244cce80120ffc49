"""``nlrepro eval``: the profile's multi-view test of a finished run or a foreign checkpoint.

The test is the training run's own (``VideoClassifier.test_step`` / ``on_test_epoch_end``
through ``trainer.test``): ``data.num_clips × data.num_crops`` views per video (30 on
kinetics), softmax averaged per video, undecodable videos counted wrong.  Nothing is
trained and no ImageNet weights are read.

What it evaluates (``nlrepro.tools.weights``): a run folder (its ``config.yaml`` and
``checkpoints/last.ckpt``), a Lightning ``.ckpt`` (config inside it) or a plain ``.pt``
state dict (config in ``W.yaml`` / ``config.yaml`` beside it, else ``--profile`` + ``--set``).
``--set`` changes the config on top, e.g. ``data.root=/k400 trainer.devices=1``.

The summary (``summary.json``) holds the metrics, the video counts, the library versions,
the resolved config and where the weights came from (path, sha256).  It goes to ``--out``,
by default ``<run>/eval/summary.json`` for a run folder and ``<W>.eval/summary.json`` beside
a checkpoint file ``W``.  A run whose config asks for precise BN tested with recomputed BN
statistics that ``last.ckpt`` does not hold; ``--precise-bn`` recomputes them the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from nlrepro.config import RunConfig, add_profile_argument, add_set_argument, to_dict
from nlrepro.data.datamodule import VideoDataModule
from nlrepro.run import rundir
from nlrepro.run.identity import config_hash
from nlrepro.run.module import VideoClassifier
from nlrepro.run.precise_bn import update_bn_stats
from nlrepro.tools.weights import Source, check_keys, load_source, resolve_config
from nlrepro.utils import atomic_write_json, git_commit, library_versions, setup_logging

log = logging.getLogger("nlrepro.eval")


def default_out(source: Source, target: Path) -> Path:
    if source.kind == "run":
        return Path(target) / "eval" / rundir.SUMMARY
    return source.path.with_name(f"{source.path.name}.eval") / rundir.SUMMARY


def load_module(source: Source, cfg: RunConfig) -> Any:
    """The training module of ``cfg`` holding ``source``'s weights (no ImageNet file read)."""
    module = VideoClassifier.from_config(cfg, load_pretrained=False)
    check_keys(module.model.state_dict(), source.state_dict)
    module.model.load_state_dict(source.state_dict)
    return module


def evaluate(source: Source, cfg: RunConfig, precise_bn: bool = False,
             module: Any = None) -> dict[str, Any]:
    """Run the multi-view test of ``cfg`` with ``source``'s weights (in ``module`` when
    given, else ``load_module``); the summary dict."""
    import lightning as L
    import torch

    t0 = time.time()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = module if module is not None else load_module(source, cfg)
    if cfg.trainer.precise_bn_batches > 0 and not precise_bn:
        log.info("the config asks for precise BN (%d batches) before testing; these weights "
                 "are tested with their stored BN statistics (--precise-bn recomputes them)",
                 cfg.trainer.precise_bn_batches)
    dm = VideoDataModule(cfg)
    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=t.precision, deterministic=t.deterministic,
        logger=False, enable_checkpointing=False, limit_test_batches=t.limit_test_batches,
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False)
    if precise_bn and t.precise_bn_batches > 0:
        dm.prepare_data()
        module.to(trainer.strategy.root_device)
        clips = (b[0].to(module.device) for b in dm.train_dataloader())
        module.train()
        update_bn_stats(module, clips, t.precise_bn_batches)
    trainer.test(module, datamodule=dm, verbose=False)
    return {
        "eval_of": source.provenance(),
        "run_id": config_hash(cfg),
        "profile": cfg.profile,
        "config": to_dict(cfg),
        "metrics": {k: float(v) for k, v in module.test_report.items()},
        "precise_bn": bool(precise_bn and t.precise_bn_batches > 0),
        "videos": dm.failure_report(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "world_size": trainer.world_size,
        "wall_seconds": time.time() - t0,
        "_global_zero": trainer.is_global_zero,
    }


# ---- command line ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="RUN_OR_CKPT",
                        help="a run folder, a Lightning .ckpt or a plain .pt state dict")
    add_profile_argument(parser, "profile for a .pt without a config beside it", default=None)
    add_set_argument(parser, "override config keys, e.g. data.root=/k400 trainer.devices=1")
    parser.add_argument("--out", type=Path, default=None,
                        help="summary file (default <run>/eval/summary.json, or "
                             "<ckpt>.eval/summary.json)")
    parser.add_argument("--precise-bn", action="store_true",
                        help="recompute BN statistics on trainer.precise_bn_batches training "
                             "batches first, as the training run did before its test")


def main(args: argparse.Namespace) -> int:
    setup_logging()
    source = load_source(args.target)
    cfg = resolve_config(source, args.profile, args.sets)
    summary = evaluate(source, cfg, args.precise_bn)
    if not summary.pop("_global_zero"):
        return 0
    out = args.out or default_out(source, args.target)
    atomic_write_json(out, summary)
    m = summary["metrics"]
    print(json.dumps({"summary": str(out), "test/top1_video": m.get("test/top1_video"),
                      "test/top5_video": m.get("test/top5_video"),
                      "test/videos": m.get("test/videos"),
                      "test/videos_failed": m.get("test/videos_failed")}, indent=2))
    return 0
