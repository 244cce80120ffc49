"""``nlrepro check-videos LIST``: decode-check every listed video before a long run.

Each video is opened with the same decord reader the dataset uses, and its first, last
and a few random frames are decoded. Three outcomes:
- ``ok``;
- ``short`` (a warning): it decodes but has fewer frames than one clip span
  (``--span``, frames × stride, 64 in the paper). It stays usable — clip indices wrap
  modulo the length, as in the official code — so it is *not* excluded; this includes a
  single-frame video (a still clip);
- ``bad``: missing, empty, not a video, truncated, no video stream or no frames, or a
  frame that does not decode. The dataset would replace it in training and count it as
  wrong in evaluation.

``--out`` writes ``<path>\\t<status>\\t<reason>`` lines (paths relative to ``--root``):
bad videos as entries, short ones as ``#`` comments. Give that file to a run as
``data.exclude`` and training skips the bad videos while evaluation counts them as failed.
Checking runs in ``--workers`` processes; one reader per video, one thread each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlrepro.data.annotations import FORMATS, AnnotationError, read_list
from nlrepro.data.video import VideoError, open_video, read_frames, worker_context

DEFAULT_SPAN = 64
STATUSES = ("ok", "short", "bad")


@dataclass(frozen=True)
class CheckResult:
    path: str  # as written to the report: relative to the root
    status: str
    reason: str
    frames: int


def check_video(path: Path, span: int = DEFAULT_SPAN, random_frames: int = 3,
                seed: int = 0) -> tuple[str, str, int]:
    """``(status, reason, num_frames)`` for one file; never raises for a bad video."""
    try:
        reader = open_video(path)
        n = len(reader)
        rng = np.random.default_rng(seed)
        picks = {0, n - 1, *rng.integers(0, n, size=random_frames).tolist()}
        read_frames(reader, sorted(picks), path)
    except VideoError as err:
        reason = _explain(path, err.reason) if err.reason.startswith("cannot open") else err.reason
        return "bad", reason, 0
    except Exception as err:  # anything else a broken file can provoke is still "bad"
        return "bad", f"{type(err).__name__}: {err}"[:200], 0
    if n < span:
        frames = "1 frame" if n == 1 else f"{n} frames"
        return "short", f"{frames} < clip span {span}; usable (indices wrap)", n
    return "ok", "", n


def _explain(path: Path, fallback: str) -> str:
    """A readable reason for a file decord could not open (its messages are C++ checks).

    PyAV (the same ffmpeg underneath) tells a broken container from a missing stream or
    undecodable data; if PyAV reads it fine, decord's own reason is kept.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(video=0):
                break
            else:
                return "no frames"
    except av.FFmpegError as err:
        what = err.strerror or type(err).__name__
        if getattr(err, "filename", None) == str(path):
            return f"not a readable video container ({what}; truncated or not a video)"
        return f"undecodable video data ({what}; truncated or corrupt)"
    except Exception as err:
        return f"{type(err).__name__}: {err}"[:200]
    return fallback


def _check_one(job: tuple[Path, str, int, int, int]) -> CheckResult:
    path, rel, span, random_frames, seed = job
    status, reason, frames = check_video(path, span, random_frames, seed)
    return CheckResult(rel, status, reason, frames)


def check_list(list_path: Path, root: Path, fmt: str = "path_label", separator: str = " ",
               workers: int = 1, span: int = DEFAULT_SPAN, random_frames: int = 3,
               seed: int = 0, progress: bool = True) -> list[CheckResult]:
    """Check every video of a list, in list order (``workers`` processes when > 1)."""
    from tqdm import tqdm

    records = read_list(list_path, fmt, root, None, separator)
    root_abs = Path(os.path.abspath(root))
    jobs = [(r.path, os.path.relpath(r.path, root_abs), span, random_frames, seed + i)
            for i, r in enumerate(records)]
    bar = dict(total=len(jobs), unit="video", disable=not progress, file=sys.stderr)
    if workers <= 1:
        return [_check_one(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
        chunk = max(1, min(32, len(jobs) // (4 * workers)))
        return list(tqdm(pool.map(_check_one, jobs, chunksize=chunk), **bar))


def write_report(results: list[CheckResult], out: Path, header: str) -> int:
    """Write bad videos (entries) and short ones (comments); returns the number of bad."""
    lines = [f"# {header}", "# path<TAB>status<TAB>reason; '#' lines are not excluded"]
    bad = 0
    for r in results:
        if r.status == "bad":
            lines.append(f"{r.path}\t{r.status}\t{r.reason}")
            bad += 1
        elif r.status == "short":
            lines.append(f"# {r.path}\t{r.status}\t{r.reason}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return bad


def summary(results: list[CheckResult], seconds: float) -> str:
    counts = Counter(r.status for r in results)
    text = [f"checked {len(results)} videos in {seconds:.1f} s: {counts['ok']} ok, "
            f"{counts['short']} short (usable, indices wrap), {counts['bad']} bad"]
    reasons = Counter(r.reason for r in results if r.status == "bad")
    text += [f"  {n:6d}  {reason}" for reason, n in reasons.most_common()]
    return "\n".join(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("list", type=Path, help="video list (train.csv, val.csv or a Kinetics CSV)")
    parser.add_argument("--root", type=Path, default=None,
                        help="data root the list's paths are relative to (default: its folder)")
    parser.add_argument("--format", choices=FORMATS, default="path_label", dest="fmt")
    parser.add_argument("--separator", default=" ", help="path/label separator of path_label lists")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="decoding processes (default: all cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write bad videos here (use it as data.exclude)")
    parser.add_argument("--span", type=int, default=DEFAULT_SPAN,
                        help="clip span in frames (frames x stride); shorter videos are 'short'")
    parser.add_argument("--random-frames", type=int, default=3,
                        help="random frames decoded per video besides the first and last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit with 1 if any video is bad")


def main(args: argparse.Namespace) -> int:
    root = args.root if args.root is not None else args.list.parent
    t0 = time.time()
    try:
        results = check_list(args.list, root, args.fmt, args.separator, args.workers,
                             args.span, args.random_frames, args.seed,
                             progress=sys.stderr.isatty())
    except AnnotationError as err:
        print(f"nlrepro check-videos: error: {err}", file=sys.stderr)
        return 2
    print(summary(results, time.time() - t0))
    bad = sum(r.status == "bad" for r in results)
    if args.out is not None:
        write_report(results, args.out, f"nlrepro check-videos {args.list} --root {root}: "
                                        f"{bad} bad of {len(results)}")
        print(f"wrote {bad} bad videos to {args.out} (use it as data.exclude)")
    return 1 if args.strict and bad else 0
