"""``nlrepro prepare-kinetics``: a raw Kinetics-400 download → the videos and lists we train on.

Every video is re-encoded with its shorter side scaled to 256 pixels (the longer side to the
nearest even number that keeps the aspect ratio), H.264 yuv420p, native frame rate, no audio,
one keyframe per second (cheap random access for clip sampling) — VNL's ``downscale_video``
and PySlowFast both train on such copies; training on the raw sizes costs about a point of
top-1.  Output follows the Kinetics layout ``<OUT>/<split>/<label>/<id>_<start>_<end>.mp4``
(label and split verbatim from the CSV, so the release CSVs themselves also work as lists,
``data.list_format=kinetics_csv``), with ``train.csv`` / ``val.csv`` lists (``path label_id``;
the reader takes the label after the last space) and the class index ``classes.json``
(``{"name": id}``, sorted train classes) for ``nlrepro.data.annotations``, and
``prepare_report.json`` with the counts the tables' footnotes quote.

Raw files are found anywhere under RAW_DIR as ``<id>_<start:06d>_<end:06d>.<ext>`` (already
trimmed) or ``<id>.<ext>`` (trimmed here to [time_start, time_end) when longer than that).
A conversion writes ``.<name>.part`` in the output folder and renames it when complete, so a
killed run never leaves a half-written video under its final name, and a second run skips
what is done.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from nlrepro.config import ConfigError
from nlrepro.data.annotations import ClassIndex
from nlrepro.utils import atomic_write_json, atomic_write_text

SHORT_SIDE = 256
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v", ".3gp")
CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLIT_CSVS = {"train": ("train.csv",), "val": ("validate.csv", "val.csv")}
CLIP_NAME = re.compile(r"^(?P<yid>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")
TRIM_TOLERANCE_S = 1.0  # a <id>.<ext> file longer than its clip by more is a full video


@dataclass(frozen=True)
class Entry:
    """One row of a release CSV."""

    split: str    # the list it goes to: "train" or "val"
    folder: str   # the CSV's split column ("train", "val"): the first path component
    label: str
    youtube_id: str
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}_{self.end:06d}"

    @property
    def rel_path(self) -> str:
        return f"{self.folder}/{self.label}/{self.name}.mp4"


def target_size(width: int, height: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """(width, height) with the shorter side = ``short_side``, the other even, aspect kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if width <= height:
        return short_side, 2 * round(height * short_side / width / 2)
    return 2 * round(width * short_side / height / 2), short_side


# ---- inputs ----------------------------------------------------------------------------
def read_release_csv(path: Path, split: str) -> list[Entry]:
    """Rows of a Kinetics release CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: missing columns {missing}; a Kinetics release CSV has "
                              f"{', '.join(CSV_COLUMNS)}, split[, is_cc] and a header line")
        out = []
        for i, row in enumerate(reader, start=2):
            try:
                entry = Entry(split, (row.get("split") or split).strip(), row["label"].strip(),
                              row["youtube_id"].strip(), int(float(row["time_start"])),
                              int(float(row["time_end"])))
            except (AttributeError, TypeError, ValueError) as err:
                raise ConfigError(f"{path}:{i}: bad row {row}: {err}") from None
            for part in (entry.folder, entry.label, entry.youtube_id):
                if not part or "/" in part or part in (".", ".."):
                    raise ConfigError(f"{path}:{i}: {part!r} cannot be a folder or file name "
                                      "(empty, '.', '..' or containing '/')")
            out.append(entry)
    return out


def release_csvs(csv_dir: Path) -> dict[str, Path]:
    """``{"train": .../train.csv, "val": .../validate.csv}``; train is required."""
    found = {}
    for split, names in SPLIT_CSVS.items():
        for name in names:
            if (csv_dir / name).is_file():
                found[split] = csv_dir / name
                break
    if "train" not in found:
        raise ConfigError(f"--csv-dir {str(csv_dir)!r} has no train.csv; expected train.csv and "
                          "validate.csv or val.csv (the Kinetics-400 release CSVs)")
    return found


def index_raw(raw_dir: Path) -> dict[tuple, Path]:
    """Raw videos under ``raw_dir`` by ``("clip", id, start, end)`` and by ``("id", id)``."""
    index: dict[tuple, Path] = {}
    for root, dirs, files in os.walk(raw_dir):
        dirs.sort()  # the first of duplicate downloads wins, in a fixed order
        for fname in sorted(files):
            path = Path(root) / fname
            if path.suffix.lower() not in VIDEO_EXTS or fname.startswith("."):
                continue
            m = CLIP_NAME.match(path.stem)
            key = ("clip", m["yid"], int(m["start"]), int(m["end"])) if m else ("id", path.stem)
            index.setdefault(key, path)
    return index


def find_raw(entry: Entry, index: dict[tuple, Path]) -> tuple[Path | None, bool]:
    """The raw file of ``entry`` and whether it may be a full video that needs trimming."""
    clip = index.get(("clip", entry.youtube_id, entry.start, entry.end))
    if clip is not None:
        return clip, False
    return index.get(("id", entry.youtube_id)), True


# ---- one video (runs in a worker process) ----------------------------------------------
def convert(src: str, dst: str, start: float, end: float, maybe_full: bool,
            crf: int = 18, keyint_s: float = 1.0) -> dict[str, Any]:
    """Re-encode ``src`` to ``dst`` (shorter side 256, H.264, no audio); atomic rename."""
    import av

    dst_path = Path(dst)
    tmp = dst_path.with_name(f".{dst_path.name}.part")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(src) as inp:
            if not inp.streams.video:
                raise ValueError("no video stream")
            vin = inp.streams.video[0]
            fps = vin.average_rate or vin.guessed_rate or vin.base_rate
            if not fps or fps <= 0:
                raise ValueError("unknown frame rate")
            fps = Fraction(fps).limit_denominator(1001)
            duration = float(inp.duration) / 1e6 if inp.duration else None
            trim = maybe_full and duration is not None and \
                duration > (end - start) + TRIM_TOLERANCE_S
            offset = float(vin.start_time * vin.time_base) if vin.start_time else 0.0
            if trim and start > 0:
                inp.seek(int((start + offset) / vin.time_base), stream=vin)
            out = vout = None
            frames, time_base = 0, 1 / fps
            try:
                for frame in inp.decode(vin):
                    if trim:
                        t = (frame.time or 0.0) - offset
                        if t < start:
                            continue
                        if t >= end:
                            break
                    if out is None:  # sized from the first frame (headers may say 0x0)
                        w, h = target_size(frame.width, frame.height)
                        out = av.open(str(tmp), "w", format="mp4")
                        vout = out.add_stream("libx264", rate=fps)
                        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
                        vout.codec_context.gop_size = max(1, round(float(fps) * keyint_s))
                        vout.options = {"crf": str(crf), "preset": "fast", "threads": "1"}
                    small = frame.reformat(w, h, "yuv420p", interpolation="BICUBIC")
                    small.pts, small.time_base = frames, time_base
                    out.mux(vout.encode(small))
                    frames += 1
                if out is None:
                    raise ValueError("no frames decoded")
                out.mux(vout.encode(None))
            finally:
                if out is not None:
                    out.close()
        os.replace(tmp, dst_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"frames": frames, "size": [w, h], "fps": float(fps), "trimmed": trim}


def convert_task(*args: Any) -> dict[str, Any]:
    """``convert`` for a worker: failures come back as ``{"error": reason}`` (plain data,
    since FFmpeg's exception types do not survive pickling)."""
    try:
        return convert(*args)
    except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return {"error": f"{type(err).__name__}: {text}" if text else type(err).__name__}


# ---- the whole download ----------------------------------------------------------------
def prepare(raw_dir: Path, out_dir: Path, csv_dir: Path, workers: int = 1, crf: int = 18,
            keyint_s: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Convert what is not done yet, then write lists, ``classes.json`` and the report."""
    raw_dir, out_dir, csv_dir = Path(raw_dir), Path(out_dir), Path(csv_dir)
    if not raw_dir.is_dir():
        raise ConfigError(f"RAW_DIR {str(raw_dir)!r} is not a folder")
    csvs = release_csvs(csv_dir)
    entries: dict[str, Entry] = {}
    for split, path in csvs.items():
        for e in read_release_csv(path, split):
            entries.setdefault(e.rel_path, e)
    classes = sorted({e.label for e in entries.values() if e.split == "train"})
    index = index_raw(raw_dir)

    status: dict[str, str] = {}
    failures: list[dict[str, str]] = []
    todo: list[tuple[Entry, Path, bool]] = []
    for rel, e in entries.items():
        if (out_dir / rel).is_file():
            status[rel] = "skipped"
            continue
        src, maybe_full = find_raw(e, index)
        if src is None:
            status[rel] = "missing"
        else:
            todo.append((e, src, maybe_full))

    t0 = time.time()
    trimmed = 0
    for (e, src, _), result in _run(todo, out_dir, workers, crf, keyint_s, progress):
        if "error" in result:
            status[e.rel_path] = "failed"
            failures.append({"video": e.rel_path, "source": str(src), "reason": result["error"]})
        else:
            status[e.rel_path] = "converted"
            trimmed += bool(result["trimmed"])

    report = _write_outputs(out_dir, entries, status, classes, failures, csvs)
    report.update(trimmed_full_videos=trimmed, seconds=round(time.time() - t0, 1),
                  settings={"short_side": SHORT_SIDE, "codec": "libx264", "crf": crf,
                            "keyint_s": keyint_s, "raw_dir": str(raw_dir)})
    atomic_write_json(out_dir / "prepare_report.json", report)
    return report


def _run(todo: list[tuple[Entry, Path, bool]], out_dir: Path, workers: int, crf: int,
         keyint_s: float, progress: bool):
    """Yield ``(task, result)`` as conversions finish (in parallel, with a progress bar + ETA)."""
    from tqdm import tqdm

    if not todo:
        return
    bar = tqdm(total=len(todo), unit="video", desc="re-encoding", disable=not progress,
               dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def args(task: tuple[Entry, Path, bool]) -> tuple:
        e, src, maybe_full = task
        return (str(src), str(out_dir / e.rel_path), e.start, e.end, maybe_full, crf, keyint_s)

    try:
        if workers <= 1:
            for task in todo:
                yield task, convert_task(*args(task))
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(convert_task, *args(task)): task for task in todo}
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except Exception as err:  # noqa: BLE001 - a crashed worker (BrokenProcessPool)
                    result = {"error": f"worker failed: {type(err).__name__}: {err}"}
                yield futures[fut], result
                bar.update()
    finally:
        bar.close()


def _write_outputs(out_dir: Path, entries: dict[str, Entry], status: dict[str, str],
                   classes: list[str], failures: list[dict[str, str]],
                   csvs: dict[str, Path]) -> dict[str, Any]:
    """Lists of the usable videos, ``classes.json`` and the per-split counts."""
    ids = {c: i for i, c in enumerate(classes)}
    ClassIndex(classes).save(out_dir / "classes.json")
    report: dict[str, Any] = {"classes": len(classes), "splits": {}, "failures": failures}
    for split, csv_path in csvs.items():
        rels = [r for r, e in entries.items() if e.split == split]
        counts = {k: sum(status[r] == k for r in rels)
                  for k in ("converted", "skipped", "failed", "missing")}
        usable = [r for r in rels if status[r] in ("converted", "skipped")]
        no_class = [r for r in usable if entries[r].label not in ids]
        lines = [f"{r} {ids[entries[r].label]}\n" for r in usable if entries[r].label in ids]
        atomic_write_text(out_dir / f"{split}.csv", "".join(lines))
        report["splits"][split] = {
            "csv": str(csv_path), "in_csv": len(rels),
            "found": len(rels) - counts["missing"], **counts, "listed": len(lines),
            "label_not_in_train": len(no_class),
            "missing_ids": sorted(entries[r].name for r in rels if status[r] == "missing")}
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for split, c in report["splits"].items():
        lines.append(f"{split}: {c['in_csv']} in the CSV, {c['found']} found, {c['converted']} "
                     f"converted, {c['skipped']} skipped (already done), {c['failed']} failed, "
                     f"{c['missing']} missing -> {c['listed']} listed")
    for f in report["failures"][:20]:
        lines.append(f"  failed {f['video']}: {f['reason']}")
    if len(report["failures"]) > 20:
        lines.append(f"  ... {len(report['failures']) - 20} more in prepare_report.json")
    return lines


# ---- command line ----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw_dir", type=Path, metavar="RAW_DIR", help="the raw download")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                        help="where the Kinetics layout, lists and report go (data.root)")
    parser.add_argument("--csv-dir", type=Path, required=True,
                        help="folder with the release train.csv and validate.csv / val.csv")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel encoder processes (default: all cores)")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality (lower = better)")
    parser.add_argument("--keyint-s", type=float, default=1.0,
                        help="seconds between keyframes (random access for clip sampling)")


def main(args: argparse.Namespace) -> int:
    report = prepare(args.raw_dir, args.out_dir, args.csv_dir, workers=args.workers,
                     crf=args.crf, keyint_s=args.keyint_s)
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out_dir / 'prepare_report.json'}")
    return 0  # unreadable downloads are expected (~1%): they are counted, not fatal
