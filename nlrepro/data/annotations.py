"""Video lists, class indices and exclusion lists.

Two list formats are read (``data.list_format``):
- ``path_label`` — PySlowFast / mmaction2 ``train.csv``: one ``<path><sep><label>`` a line;
  the label is a class id or a class name; the path may contain the separator (the
  label is the last field).
- ``kinetics_csv`` — the Kinetics release CSV: a header naming at least
  ``label,youtube_id,time_start,time_end,split`` (``is_cc`` and others are ignored); the
  video lives at ``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``.

Lists are data written by other people: every path is resolved against the data root and
must stay inside it, and every bad line is reported with its file and line number.
Class ids come from a class-index JSON (``{"name": id}``), written once from the sorted
class names of the training split and then reused, so ids never shift between splits.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nlrepro.choices import LIST_FORMATS as FORMATS
from nlrepro.errors import ConfigError
from nlrepro.utils import atomic_write_text

log = logging.getLogger(__name__)

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


class AnnotationError(ConfigError):
    """A bad list, class index or exclusion file; the message names file and line (a user
    error, like a bad config value: the CLI prints it in one line)."""


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: absolute ``path`` inside the root, class id, stable id."""

    path: Path
    label: int
    video_id: str


class ClassIndex:
    """Class names ↔ ids 0..K-1, in a fixed order."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(str(n) for n in names)
        self._ids = {name: i for i, name in enumerate(self.names)}
        if len(self._ids) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise AnnotationError(f"duplicate class names: {dup}")

    @classmethod
    def numbered(cls, num_classes: int) -> "ClassIndex":
        """Anonymous classes ``"0".."K-1"`` for lists whose labels are ids."""
        return cls([str(i) for i in range(num_classes)])

    @classmethod
    def from_labels(cls, labels: Iterable[str], num_classes: int | None = None) -> "ClassIndex":
        """Sorted distinct names; labels that are all ids give ``numbered`` classes."""
        distinct = set(labels)
        if distinct and all(_as_id(t) is not None for t in distinct):
            return cls.numbered(num_classes or max(int(t) for t in distinct) + 1)
        return cls(sorted(distinct))

    @classmethod
    def load(cls, path: Path) -> "ClassIndex":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise AnnotationError(f"{path}: cannot read the class index: {err}") from err
        if not isinstance(data, dict) or not all(type(v) is int for v in data.values()) \
                or sorted(data.values()) != list(range(len(data))):
            raise AnnotationError(f"{path}: a class index maps names to the ids 0..K-1 "
                                  "exactly once, e.g. {\"abseiling\": 0, \"air drumming\": 1}")
        return cls(sorted(data, key=data.__getitem__))

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self._ids, indent=1, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassIndex) and self.names == other.names

    def __repr__(self) -> str:
        return f"ClassIndex({len(self)} classes: {', '.join(self.names[:3])}...)"

    def id_of(self, label: str) -> int:
        """A label token (class name, or class id) -> id; ``KeyError`` says why not."""
        if label in self._ids:
            return self._ids[label]
        idx = _as_id(label)
        if idx is None:
            raise KeyError(f"unknown label {label!r} (not one of the {len(self)} class names, "
                           f"e.g. {', '.join(map(repr, self.names[:3]))})")
        if not 0 <= idx < len(self):
            raise KeyError(f"label id {idx} is outside the class count: valid ids 0..{len(self) - 1}")
        return idx


def _as_id(token: str) -> int | None:
    token = token.strip()
    if token.lstrip("-").isdigit():
        return int(token)
    return None


def resolve_inside(root: Path, rel: str) -> Path:
    """``root/rel`` normalised, refusing anything outside ``root``.

    Checked lexically (``normpath``), not with ``resolve()``: dataset roots are often
    folders of symlinks to other disks, which is the owner's choice, while a ``..`` in a
    list line is not.
    """
    root = Path(os.path.abspath(root))
    full = Path(os.path.normpath(root / rel))
    if root not in full.parents:
        raise ValueError(f"path {rel!r} escapes the data root {str(root)!r}")
    return full


# ---- parsing ---------------------------------------------------------------------------
def _rows(path: Path, fmt: str, separator: str) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, relative video path, label token, video id)`` for each entry."""
    if fmt not in FORMATS:
        raise AnnotationError(f"list format {fmt!r} is not valid; choose one of {list(FORMATS)}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read the list: {err}") from err
    if fmt == "path_label":
        yield from _path_label_rows(path, text, separator)
    else:
        yield from _kinetics_rows(path, text)


def _path_label_rows(path: Path, text: str, sep: str) -> Iterator[tuple[int, str, str, str]]:
    if not sep:
        raise AnnotationError("data.separator must not be empty")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(sep, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise AnnotationError(f"{path}:{lineno}: expected '<path>{sep}<label>' "
                                  f"(separator {sep!r}), got {line!r}")
        rel, label = parts[0].strip(), parts[1].strip()
        yield lineno, rel, label, str(Path(rel).with_suffix(""))


def _kinetics_rows(path: Path, text: str) -> Iterator[tuple[int, str, str, str]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise AnnotationError(f"{path}:1: empty file; expected a header with {list(KINETICS_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in KINETICS_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(f"{path}:1: header {header} lacks the columns {missing} "
                              f"(a Kinetics CSV has {list(KINETICS_COLUMNS)}[,is_cc])")
    col = {c: header.index(c) for c in KINETICS_COLUMNS}
    for row in reader:
        lineno = reader.line_num
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise AnnotationError(f"{path}:{lineno}: expected {len(header)} fields "
                                  f"({','.join(header)}), got {len(row)}: {row}")
        label, yid, split = (row[col[c]].strip() for c in ("label", "youtube_id", "split"))
        if not (label and yid and split):
            raise AnnotationError(f"{path}:{lineno}: empty label, youtube_id or split in {row}")
        times = []
        for c in ("time_start", "time_end"):
            try:
                value = float(row[col[c]])
            except ValueError:
                value = float("nan")
            if not value.is_integer() or value < 0:
                raise AnnotationError(f"{path}:{lineno}: {c} must be a whole number of "
                                      f"seconds >= 0, got {row[col[c]]!r}")
            times.append(int(value))
        video_id = f"{yid}_{times[0]:06d}_{times[1]:06d}"
        yield lineno, f"{split}/{label}/{video_id}.mp4", label, video_id


def list_labels(path: Path, fmt: str, separator: str = " ") -> list[str]:
    """The raw label tokens of a list (to build a class index from the training split)."""
    return [label for _, _, label, _ in _rows(path, fmt, separator)]


def read_list(path: Path, fmt: str, root: Path, classes: ClassIndex | None,
              separator: str = " ") -> list[VideoRecord]:
    """Parse a list into records; ``classes=None`` skips labels (``label=-1``)."""
    records = []
    for lineno, rel, token, video_id in _rows(path, fmt, separator):
        try:
            full = resolve_inside(root, rel)
            label = -1 if classes is None else classes.id_of(token)
        except (ValueError, KeyError) as err:
            reason = err.args[0] if err.args else str(err)
            raise AnnotationError(f"{path}:{lineno}: {reason}") from None
        records.append(VideoRecord(full, label, video_id))
    return records


def load_or_create_classes(index_path: Path, train_list: Path, fmt: str, separator: str = " ",
                           num_classes: int | None = None) -> ClassIndex:
    """The class index at ``index_path``; written from the training split the first time.

    Lists whose labels are all ids have no names to write: they get ``numbered`` classes
    and no file, so a wrong class count is never frozen into one.
    """
    index_path = Path(index_path)
    if index_path.is_file():
        return ClassIndex.load(index_path)
    labels = list_labels(train_list, fmt, separator)
    classes = ClassIndex.from_labels(labels, num_classes)
    if all(_as_id(t) is not None for t in labels):
        return classes
    classes.save(index_path)
    log.info("wrote the class index %s (%d classes from %s)", index_path, len(classes), train_list)
    return classes


# ---- exclusion lists (written by ``nlrepro check-videos --out``) ---------------------
def read_exclusions(path: Path, root: Path) -> dict[Path, str]:
    """``{absolute video path: reason}`` from ``<path>\\t<status>\\t<reason>`` lines.

    Blank lines and ``#`` comments are skipped (check-videos writes usable-but-short
    videos as comments, so they are documented but not excluded).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read the exclusion list: {err}") from err
    out: dict[Path, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, _, reason = line.rstrip("\n").partition("\t")
        try:
            out[resolve_inside(root, rel.strip())] = reason.replace("\t", ": ") or "excluded"
        except ValueError as err:
            raise AnnotationError(f"{path}:{lineno}: {err}") from None
    return out


def split_excluded(records: Sequence[VideoRecord], excluded: dict[Path, str]
                   ) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """``(kept, excluded)``: the caller reports how many were left out."""
    kept = [r for r in records if r.path not in excluded]
    gone = [r for r in records if r.path in excluded]
    return kept, gone
