"""Watching runs: readable run names next to the hash, and the loggers a run writes to.

A run's name reads like the table it belongs to: ``<table>/<row label>/R<depth>/s<seed>``
(``2a/Gaussian/R50/s0``) for a sweep's run, ``<output folder>/<arch>[-NL<n>-<f>]/R<depth>/s<seed>``
(``adhoc/c2d-NL1-gaussian/R50/s0``) for one trained by ``nlrepro train``.  It is no identity
(two configs may share it): the run id stays the hash, and the name is shown beside it in
``row.json``, ``summary.json``, ``sweep --status`` and TensorBoard (``rundir.tensorboard_dir``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from nlrepro.config import ConfigError, RunConfig
from nlrepro.models.placement import compile_placement, stage_blocks_of
from nlrepro.run import rundir

_UNSAFE = str.maketrans({"/": "-", "\\": "-", ":": "-"})


def _part(text: str) -> str:
    """One path component: no separators, no surrounding blanks."""
    return str(text).translate(_UNSAFE).strip() or "_"


def _model_part(cfg: RunConfig) -> str:
    nl = cfg.model.nonlocal_
    placement = compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model),
                                  cfg.model.depth, fill=nl.fill_small_stages)
    blocks = sum(len(v) for v in placement.values())
    return cfg.model.arch + (f"-NL{blocks}-{nl.instantiation}" if blocks else "")


def run_name(cfg: RunConfig, table: str | None = None, labels: list[str] | None = None) -> str:
    """``2a/Gaussian/R50/s0`` (table and row labels of a sweep), else from the config."""
    group = table if table is not None else Path(cfg.output_dir).name
    what = " + ".join(labels) if labels else _model_part(cfg)
    return "/".join([_part(group), _part(what), f"R{cfg.model.depth}", f"s{cfg.seed}"])


def name_of(cfg: RunConfig, run_dir: Path) -> str:
    """The run's name: the one its ``row.json`` records, else derived as ``run_name`` does."""
    row = rundir.read_row(run_dir) or {}
    if row.get("name"):
        return str(row["name"])
    return run_name(cfg, row.get("table"), row.get("labels"))


def make_loggers(cfg: RunConfig, run_dir: Path, name: str) -> list[Any]:
    """``trainer.loggers`` as Lightning loggers; the CSV logger first (``metrics.csv`` in the
    run folder, which the tables and ``rundir.logged`` read)."""
    loggers: list[Any] = [CSVLogger(save_dir=run_dir, name="", version="")]
    if "tensorboard" in cfg.trainer.loggers:
        if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            raise ConfigError("trainer.loggers: 'tensorboard' needs the tensorboard package "
                              "(pip install tensorboard); or set trainer.loggers=[csv]")
        loggers.append(TensorBoardLogger(save_dir=rundir.tensorboard_dir(cfg, run_dir, name),
                                         name="", version="", default_hp_metric=False))
    return loggers
