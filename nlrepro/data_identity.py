"""What a run's data is, for its id: the content of the lists, the class order and the
exclusion list, not the names of the files that hold them.

Two data roots with different lists, or one exclusion list edited in place, train different
runs, so they must not share a run folder (the second would silently return the first's
summary).  A file that cannot be read is recorded by its path as configured instead, so a
run planned before its data exists still gets a distinct id.  The proxy's data is already
determined by ``data.proxy`` (its videos are generated from it), so only its exclusion list
is added, and only when one is set: existing proxy run ids do not change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from nlrepro.config import DataConfig

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
    from nlrepro.data.annotations import AnnotationError, ClassIndex, list_labels

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
