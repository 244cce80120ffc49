"""A run's identity: the part of its config that determines its result, and its hash (run id).

The data enters by content, not by file name: the lists, the class order and the exclusion
list (two data roots with different lists, or an exclusion list edited in place, must not
share a run folder, or the second run silently returns the first's summary).  A file that
cannot be read is recorded by its path as configured.  The proxy's videos are generated from
``data.proxy``, which is hashed already, so only its exclusion list is added, and only when
one is set: existing proxy run ids do not change.

The run id names the run's folder (``<output_dir>/<run id>``), so it must never change for a
config that computes the same thing: ``tests/run/test_identity.py`` pins the ids of every
table's runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from nlrepro.choices import PROXY_FRAMES
from nlrepro.config import DataConfig, RunConfig, holds_f, to_dict
from nlrepro.config.schema import ADAMW_EPS
from nlrepro.data.annotations import AnnotationError, ClassIndex, list_labels
from nlrepro.models.placement import compile_placement, stage_blocks_of
from nlrepro.proxy.dataset import recorded_fields
from nlrepro.proxy.pretrain import identity as frames_identity

# Keys that describe where/how a run executes, not what it computes: left out of the run id.
NON_IDENTITY_KEYS = ("output_dir", "launcher", "trainer.devices", "trainer.num_nodes",
                     "trainer.strategy", "trainer.accelerator", "trainer.threads",
                     "data.num_workers", "data.root", "data.decoder", "trainer.loggers")


def identity(cfg: RunConfig) -> dict:
    """The part of the config that determines the result (hashed into the run id)."""
    data = to_dict(cfg)
    # Hash the network that is built, not how it was asked for: (blocks, stages) become the
    # compiled placement, and the NL settings of a network without NL blocks are dropped.
    nl = cfg.model.nonlocal_
    placement = compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model),
                                  cfg.model.depth, fill=nl.fill_small_stages)
    data["model"]["nonlocal"].pop("fill_small_stages", None)  # the placement says it all
    data["model"]["nonlocal"] = ({**data["model"]["nonlocal"], "blocks": placement,
                                  "stages": None} if placement else {"blocks": {}})
    if data["data"].get("proxy"):
        data["data"]["proxy"] = recorded_fields(cfg.data.proxy)
    if cfg.model.pretrained == PROXY_FRAMES:
        # The run depends on the frame pre-trained weights: hash what they depend on.
        data["model"]["pretrained"] = {PROXY_FRAMES: frames_identity(cfg)}
    if nl.concat_offset is None and "concat_offset" in data["model"]["nonlocal"]:
        data["model"]["nonlocal"].pop("concat_offset")  # unset: the ids of earlier runs stay
    if cfg.optim.optimizer != "adamw" or cfg.optim.eps == ADAMW_EPS:
        data["optim"].pop("eps")  # unused, or the default: the ids of earlier runs stay
    if not holds_f(cfg) or not placement:  # no hold, or no block it applies to
        data["optim"].pop("embed_hold_epochs", None)
    data["optim"].pop("embed_hold_instantiations", None)  # decides only whether it applies
    if not cfg.trainer.sync_batchnorm:  # the default leaves the ids of earlier runs as they were
        data["trainer"].pop("sync_batchnorm", None)
    if not cfg.trainer.init_fold_nonlocal_bn:  # likewise
        data["trainer"].pop("init_fold_nonlocal_bn", None)
    data["data"].update(data_identity(cfg.data, cfg.model.num_classes))
    for key in NON_IDENTITY_KEYS:
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1], None)
    return data


PREPARE_REPORT = "prepare_report.json"  # written by nlrepro prepare-kinetics


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(Path(path).resolve()), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=256)
def _digest(key: tuple[str, int, int]) -> str:
    h = hashlib.sha256()
    with open(key[0], "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file's bytes (cached while it is unchanged), or
    ``unreadable:<path>``."""
    key = _stat_key(path)
    try:
        return f"sha256:{_digest(key)}" if key is not None else _unreadable(path)
    except OSError:
        return _unreadable(path)


def _unreadable(path: Path) -> str:
    # As configured, not resolved: a run id must not depend on where the checkout lives.
    return f"unreadable:{path}"


def class_order(d: DataConfig, num_classes: int) -> str:
    """Digest of the class names in id order: from ``class_index`` when the file exists,
    else as it will be written from the training list (the same order either way)."""
    root = Path(d.root)
    try:
        if d.class_index and (root / d.class_index).is_file():
            names = ClassIndex.load(root / d.class_index).names
        else:
            labels = list_labels(root / d.train_list, d.list_format, d.separator)
            names = ClassIndex.from_labels(labels, num_classes).names
    except (OSError, AnnotationError, ValueError):
        return _unreadable(root / (d.class_index or d.train_list))
    return "sha256:" + hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]


def _prepare_settings(root: Path) -> Any:
    """How prepare-kinetics encoded the videos (short side, codec, crf), if it did."""
    try:
        settings = dict(json.loads((root / PREPARE_REPORT).read_text()).get("settings") or {})
    except (OSError, ValueError, AttributeError):
        return None
    settings.pop("raw_dir", None)  # where the raw download was does not change a video
    return settings


def data_identity(d: DataConfig, num_classes: int) -> dict[str, Any]:
    """The ``data`` entries hashed into the run id in place of file names and the root."""
    root = Path(d.root)
    out: dict[str, Any] = {}
    if d.exclude is not None:
        out["exclude"] = file_digest(root / d.exclude)
    if d.proxy is None:
        out["source"] = {
            "train_list": file_digest(root / d.train_list),
            "val_list": file_digest(root / d.val_list),
            "test_list": file_digest(root / d.test_list),
            "classes": class_order(d, num_classes),
            "prepared": _prepare_settings(root),
        }
    return out


def config_hash(cfg: RunConfig) -> str:
    """Stable short hash of the result-determining config: the run id."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
