"""Validation of a built config: choices, ranges and combinations, before anything runs."""

from __future__ import annotations

from typing import Any

from nlrepro.choices import (ARCHS, BASE_FRAMES, CUE_LENGTH, DECODERS, DEPTHS, FRAME_TARGETS,
                             INSTANTIATIONS, LAUNCHERS, LIST_FORMATS, LOGGERS, MAX_PROBE_COPIES,
                             NORMS, OPTIMIZERS, PROXY_FRAMES, PROXY_TASKS, SCHEDULES, SCOPES, STAGES,
                             TIMELINE_FRAMES)
from nlrepro.config.ranges import check_fit, check_ranges
from nlrepro.config.schema import NonLocalConfig, ProxyConfig, RunConfig, get
from nlrepro.errors import ConfigError
from nlrepro.models.placement import compile_placement, stage_blocks_of

CHOICES: dict[str, tuple] = {
    "model.arch": ARCHS,
    "model.depth": DEPTHS,
    "model.nonlocal.instantiation": INSTANTIATIONS,
    "model.nonlocal.scope": SCOPES,
    "model.nonlocal.norm": NORMS,
    "data.list_format": LIST_FORMATS,
    "data.decoder": DECODERS,
    "optim.optimizer": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
    "launcher.name": LAUNCHERS,
}


# Keys that hold a list, each item one of these (None: the key is unset).
LIST_CHOICES: dict[str, tuple] = {
    "model.nonlocal.stages": STAGES,
    "optim.embed_hold_instantiations": INSTANTIATIONS,
    "trainer.loggers": LOGGERS,
}


def _check_choice(cfg: RunConfig, key: str) -> None:
    value = get(cfg, key)
    if value not in CHOICES[key]:
        raise ConfigError(f"{key}: {value!r} is not valid; choose one of {list(CHOICES[key])}")


def _check_each(cfg: RunConfig, key: str) -> None:
    for value in get(cfg, key) or ():
        if value not in LIST_CHOICES[key]:
            raise ConfigError(f"{key}: {value!r} is not valid; "
                              f"choose from {list(LIST_CHOICES[key])}")


def validate(cfg: RunConfig) -> None:
    """Reject impossible configs before any work starts."""
    check_ranges(cfg)
    for key in CHOICES:
        _check_choice(cfg, key)
    for key in LIST_CHOICES:
        _check_each(cfg, key)
    nl = cfg.model.nonlocal_
    if isinstance(nl.blocks, int) and nl.blocks < 0:
        raise ConfigError(f"model.nonlocal.blocks: {nl.blocks} must be >= 0")
    for s, k in nl.temporal_groups.items():
        if s not in STAGES or k < 1:
            raise ConfigError(f"model.nonlocal.temporal_groups: {s}={k} invalid; "
                              f"stages {list(STAGES)}, group >= 1")
    loggers = cfg.trainer.loggers
    if "csv" not in loggers or len(set(loggers)) != len(loggers):
        raise ConfigError(f"trainer.loggers: {loggers!r} must hold 'csv' (the tables read "
                          f"metrics.csv) and no name twice; valid: {list(LOGGERS)}")
    d = cfg.data
    if d.frames < 1 or d.stride < 1:
        raise ConfigError(f"data.frames/data.stride must be >= 1, got {d.frames}/{d.stride}")
    if len(d.train_scale) != 2 or d.train_scale[0] > d.train_scale[1]:
        raise ConfigError(f"data.train_scale: {d.train_scale} must be [min, max]")
    if d.crop > d.train_scale[0]:
        raise ConfigError(f"data.crop {d.crop} is larger than the smallest train scale "
                          f"{d.train_scale[0]}")
    if d.test_crop > d.test_scale:
        raise ConfigError(f"data.test_crop {d.test_crop} is larger than data.test_scale "
                          f"{d.test_scale}")
    if nl.scope == "time" and _has_nonlocal(nl) and d.frames < 2:
        raise ConfigError("model.nonlocal.scope: 'time' needs clips of at least 2 frames "
                          f"(data.frames={d.frames})")
    for m in cfg.optim.milestones:
        if not 0 < m < 1:
            raise ConfigError(f"optim.milestones: {m} must be a fraction in (0, 1)")
    if cfg.trainer.sync_batchnorm and cfg.model.frozen_bn:
        raise ConfigError("trainer.sync_batchnorm: True has no BN to synchronise with "
                          "model.frozen_bn: true; choose one of [False]")
    if cfg.launcher.name == "slurm" and cfg.launcher.timeout_min < 1:
        raise ConfigError("launcher.timeout_min must be >= 1")
    if cfg.model.pretrained == PROXY_FRAMES and d.proxy is None:
        raise ConfigError("model.pretrained: 'proxy-frames' needs the proxy data (data.proxy); "
                          "valid for other data: null, 'imagenet' or a 2D state-dict file")
    if d.proxy is not None:
        check_proxy_config(d.proxy)
    check_fit(cfg)
    # The placement must fit the network's stage sizes (models.placement is plain data).
    compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model), cfg.model.depth,
                      fill=nl.fill_small_stages)


def _has_nonlocal(nl: NonLocalConfig) -> bool:
    return bool(nl.blocks) if isinstance(nl.blocks, int) else any(nl.blocks.values())


def check_proxy_config(p: ProxyConfig) -> None:
    """Reject sizes the proxy task cannot be drawn at; the message names the value and range."""
    def need(ok: bool, key: str, value: Any, valid: str) -> None:
        if not ok:
            raise ConfigError(f"data.proxy.{key}: {value!r} is not valid; {valid}")
    for key in ("num_train", "num_val", "num_test"):
        v = getattr(p, key)
        need(isinstance(v, int) and v >= 1, key, v, "give a positive number of videos")
    need(p.frames >= BASE_FRAMES and p.frames % BASE_FRAMES == 0, "frames", p.frames,
         f"choose a multiple of {BASE_FRAMES} (8, 16, 32, ...)")
    need(p.size >= 32 and p.size % 8 == 0, "size", p.size,
         "choose a multiple of 8 that is at least 32 (pixels)")
    need(8 <= p.cue_size <= p.size, "cue_size", p.cue_size, f"choose 8..{p.size} (pixels)")
    need(0 <= p.crf <= 51, "crf", p.crf, "choose 0..51 (libx264 constant rate factor)")
    need(0 <= p.noise <= 64, "noise", p.noise, "choose 0..64 (pixel noise std)")
    need(0 <= p.distractors <= 8, "distractors", p.distractors, "choose 0..8")
    need(0.0 <= p.decoys <= 1.0, "decoys", p.decoys, "choose a fraction of clips in [0, 1]")
    need(isinstance(p.pretrain_images, int) and p.pretrain_images >= 16, "pretrain_images",
         p.pretrain_images, "give at least 16 frames (one batch)")
    need(isinstance(p.pretrain_epochs, int) and p.pretrain_epochs >= 1, "pretrain_epochs",
         p.pretrain_epochs, "give a positive number of epochs")
    need(0.0 <= p.persist_cue < 1.0, "persist_cue", p.persist_cue,
         "choose a fraction in [0, 1) of training clips (1 would leave no hard clip to learn from)")
    need(p.task in PROXY_TASKS, "task", p.task, f"choose one of {', '.join(PROXY_TASKS)}")
    if p.task == "timeline":
        need(p.frames <= TIMELINE_FRAMES, "frames", p.frames,
             f"the timeline task draws {TIMELINE_FRAMES} frames: choose 8, 16, 24 or 32")
    need(p.pretrain_target in FRAME_TARGETS, "pretrain_target", p.pretrain_target,
         f"choose one of {', '.join(FRAME_TARGETS)}")
    need(isinstance(p.probe_copies, int) and 1 <= p.probe_copies <= MAX_PROBE_COPIES,
         "probe_copies", p.probe_copies, f"choose 1..{MAX_PROBE_COPIES} identical probes")
    need(isinstance(p.cue_length, int) and 1 <= p.cue_length <= CUE_LENGTH, "cue_length",
         p.cue_length, f"choose 1..{CUE_LENGTH} base frames (longer would share a time step "
         "with the probe after the temporal pool)")
