"""Value ranges of the run config, checked before anything runs.

A value out of range would otherwise fail late (after frame pre-training or data
generation), inside torch with a traceback, or not at all (``max_epochs: 0`` would mark an
untrained model done).  Each rule is one row of ``RULES``: the key, a test, and the range in
words; ``check_ranges`` raises a ``ConfigError`` that names all three.  ``check_fit`` checks
that clips and crops are large enough for the network's pools.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from nlrepro.choices import PROXY_CLASSES
from nlrepro.config.schema import RunConfig, get
from nlrepro.errors import ConfigError
from nlrepro.models.placement import temporal_sizes


def _int_at_least(n: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= n,
            f"an integer >= {n}")


def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    return ok, "a finite number " + " and ".join(p for p in (left, right) if p)


def _batches() -> tuple[Callable[[Any], bool], str]:
    """Lightning's limit_*_batches: a fraction in (0, 1] or a whole number of batches."""
    def ok(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return v >= 1
        return isinstance(v, float) and 0.0 < v <= 1.0
    return ok, "a fraction in (0, 1] or an integer >= 1"


def _devices() -> tuple[Callable[[Any], bool], str]:
    return ((lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
             or (isinstance(v, str) and v != "")),
            "an integer >= 1, 'auto' or a device list such as '0,1'")


def _each(rule: tuple[Callable[[Any], bool], str], plural: str
          ) -> tuple[Callable[[Any], bool], str]:
    test = rule[0]
    return (lambda v: v is None or all(test(x) for x in v)), f"a list of {plural}"


def _max_steps() -> tuple[Callable[[Any], bool], str]:
    return ((lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1)),
            "-1 (no limit) or an integer >= 1")


# (key, (test, allowed)); a None value of an optional key is not checked.
RULES: list[tuple[str, tuple[Callable[[Any], bool], str]]] = [
    ("seed", _int_at_least(0)),
    ("model.num_classes", _int_at_least(2)),
    ("model.width", _int_at_least(1)),
    ("model.stem_kernel", _int_at_least(1)),
    ("model.stem_stride", _int_at_least(1)),
    ("model.stem_temporal_stride", _int_at_least(1)),
    ("model.dropout", _number(0.0, 1.0, hi_open=True)),
    ("model.stage_blocks", _each(_int_at_least(1), "integers >= 1")),
    ("model.nonlocal.bn_init_gamma", _number()),
    ("model.nonlocal.concat_offset", _number()),
    ("data.batch_size", _int_at_least(1)),
    ("data.num_workers", _int_at_least(0)),
    ("data.max_retries", _int_at_least(0)),
    ("data.frames", _int_at_least(1)),
    ("data.stride", _int_at_least(1)),
    ("data.crop", _int_at_least(1)),
    ("data.train_scale", _each(_int_at_least(1), "integers >= 1")),
    ("data.test_scale", _int_at_least(1)),
    ("data.test_crop", _int_at_least(1)),
    ("data.num_clips", _int_at_least(1)),
    ("data.num_crops", _int_at_least(1)),
    ("data.mean", _number()),
    ("data.std", _number(0.0, lo_open=True)),
    ("optim.lr", _number(0.0, lo_open=True)),
    ("optim.momentum", _number(0.0, 1.0, hi_open=True)),
    ("optim.weight_decay", _number(0.0)),
    ("optim.eps", _number(0.0, lo_open=True)),
    ("optim.bn_weight_decay", _number(0.0)),
    ("optim.gamma", _number(0.0, lo_open=True)),
    ("optim.warmup_epochs", _number(0.0)),
    ("optim.embed_hold_epochs", _number(0.0)),
    ("trainer.max_epochs", _int_at_least(1)),
    ("trainer.max_steps", _max_steps()),
    ("trainer.devices", _devices()),
    ("trainer.num_nodes", _int_at_least(1)),
    ("trainer.threads", _int_at_least(0)),
    ("trainer.log_every_n_steps", _int_at_least(1)),
    ("trainer.check_val_every_n_epoch", _int_at_least(1)),
    ("trainer.limit_train_batches", _batches()),
    ("trainer.limit_val_batches", _batches()),
    ("trainer.limit_test_batches", _batches()),
    ("trainer.precise_bn_batches", _int_at_least(0)),
    ("launcher.local_workers", _int_at_least(1)),
]


def check_ranges(cfg: RunConfig) -> None:
    """Raise ``ConfigError("key: value is not valid; give <range>")`` for the first bad value."""
    for key, (test, allowed) in RULES:
        value = get(cfg, key)
        if value is not None and not test(value):
            raise ConfigError(f"{key}: {value!r} is not valid; give {allowed}")


def _conv_out(n: int, kernel: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - kernel) // stride + 1


def check_fit(cfg: RunConfig) -> None:
    """Clips and crops must survive the stem and the pools (a too-small input fails in torch).

    The proxy's labels are its four classes, so its ``model.num_classes`` must be 4.
    """
    m, d = cfg.model, cfg.data
    if m.stem_pool:  # pool1 is a 3x3 max-pool without padding on conv1's output
        for key in ("data.crop", "data.test_crop"):
            side = get(cfg, key)
            out = _conv_out(side, m.stem_kernel, m.stem_stride, m.stem_kernel // 2)
            if out < 3:
                least = next(n for n in range(1, 4096) if
                             _conv_out(n, m.stem_kernel, m.stem_stride, m.stem_kernel // 2) >= 3)
                raise ConfigError(f"{key}: {side} is too small for the network: conv1 "
                                  f"(stride {m.stem_stride}) leaves {out} pixels for pool1, "
                                  f"which needs 3; give at least {least}")
    temporal_sizes(d.frames, m.stem_temporal_stride, m.stem_pool, m.pool2)  # names data.frames
    if d.proxy is not None:
        if m.num_classes != len(PROXY_CLASSES):
            raise ConfigError(f"model.num_classes: {m.num_classes} is not valid for the proxy "
                              f"data; give {len(PROXY_CLASSES)} (its classes: "
                              f"{', '.join(PROXY_CLASSES)})")
