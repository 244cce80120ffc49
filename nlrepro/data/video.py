"""Decoding clips (decord, or PyAV: ``data.decoder``), temporal sampling, and the video dataset.

Temporal sampling (paper Sec. 4.1, VNL):
- train: ``frames × stride`` consecutive frames from a uniformly random start, keeping
  every ``stride``-th (64 → 32 frames with stride 2; the 128-frame recipe uses stride 1).
  A video shorter than the span starts at frame 0 and its indices wrap modulo its length.
- eval: ``num_clips`` windows of the same span with starts evenly spaced over
  ``[0, n - span]`` (one clip = the centre one); short videos wrap the same way.

Items (default collation turns them into batched tensors):
- train: ``(clip float (C,T,H,W), label, retries)`` — ``retries`` = how many unreadable
  videos were replaced (by random ones) before this one; summed by the LightningModule,
  because counters in DataLoader worker processes never reach the main process.
- val / test: one item per view ``(clip, label, video_idx, clip_idx, crop_idx, ok)``;
  ``index = (video_idx * num_clips + clip_idx) * num_crops + crop_idx``. An unreadable
  (or excluded) video is never substituted: its views are zeros with ``ok=False``, and
  the video counts as wrong. Validation uses one centre clip and one centre crop at the
  training crop size (clip-level accuracy); test uses every view (video-level).
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nlrepro.choices import SPLITS
from nlrepro.config import DataConfig
from nlrepro.data.annotations import VideoRecord, split_excluded
from nlrepro.data.pyav_reader import PyAVReader
from nlrepro.data.transforms import EvalTransform, TrainTransform, evenly_spaced

log = logging.getLogger(__name__)

# A dataset folder may ship its videos decoded once (the proxy generator does):
# <root>/decoded/<name>.npy (uint8, videos × T × H × W × C) + <name>.txt (their relative paths).
DECODED_DIR = "decoded"


class VideoError(RuntimeError):
    """A video that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# ---- videos decoded once, stored with the dataset ------------------------------------
def write_decoded(root: Path, name: str, relpaths: Sequence[str], frames: np.ndarray) -> None:
    """Store ``frames`` (row i = the decoded frames of ``relpaths[i]``) under ``root``."""
    folder = Path(root) / DECODED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if frames.dtype != np.uint8 or frames.ndim != 5 or len(frames) != len(relpaths):
        raise ValueError(f"decoded frames must be uint8 (videos, T, H, W, C) with one row per "
                         f"path; got {frames.dtype} {frames.shape} for {len(relpaths)} paths")
    np.save(folder / f"{name}.npy", frames)
    (folder / f"{name}.txt").write_text("".join(f"{p}\n" for p in relpaths))


def read_decoded(root: Path) -> dict[Path, tuple[np.ndarray, int]]:
    """``{video path: (frames array, row)}`` for every stored video (memory-mapped)."""
    folder = Path(root) / DECODED_DIR
    index: dict[Path, tuple[np.ndarray, int]] = {}
    for names in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        frames = np.load(names.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
        rels = names.read_text().splitlines()
        if len(rels) != len(frames):
            log.warning("%s: %d paths for %d decoded videos; not used", names, len(rels),
                        len(frames))
            continue
        for row, rel in enumerate(rels):
            index[(Path(root) / rel).resolve()] = (frames, row)
    return index


# ---- decoding ------------------------------------------------------------------------
def _decord_message(err: BaseException) -> str:
    """First line of a decord/ffmpeg error, without its ``[time] file.cc:line:`` prefix."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"^\[[\d:]+\]\s*\S+:\d+:\s*", "", text)[:200]


_fallback_logged = False


def resolve_decoder(decoder: str = "decord") -> str:
    """``decoder``, or ``pyav`` (said once in the log) when decord cannot be imported."""
    global _fallback_logged
    if decoder == "decord":
        try:
            import decord  # noqa: F401
        except ImportError:
            if not _fallback_logged:
                log.info("decord is not installed here: decoding with PyAV (data.decoder: pyav)")
                _fallback_logged = True
            return "pyav"
    return decoder


def open_video(path: Path | str, decoder: str = "decord") -> Any:
    """A reader with decord's ``VideoReader`` interface: decord's (one thread: parallelism
    comes from DataLoader workers) or PyAV's (``nlrepro.data.pyav_reader``), same frames."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "missing file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        if resolve_decoder(decoder) == "pyav":
            reader = PyAVReader(path)
        else:
            import decord

            reader = decord.VideoReader(str(path), num_threads=1)
    except Exception as err:  # decord: DECORDError / RuntimeError; PyAV: FFmpegError (ffmpeg text)
        reason = _decord_message(err).replace(str(path), "<file>")
        raise VideoError(path, f"cannot open: {reason}") from None
    if len(reader) == 0:
        raise VideoError(path, "no frames")
    return reader


def read_frames(reader: Any, indices: Sequence[int] | np.ndarray, path: Path | str = "?"
                ) -> torch.Tensor:
    """Frames ``indices`` (any order, repeats allowed) as ``uint8 (T, H, W, C)``.

    Each distinct frame is decoded once, in increasing order.
    """
    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    if len(unique) and not 0 <= unique[0] <= unique[-1] < len(reader):
        raise VideoError(path, f"frame indices {unique[0]}..{unique[-1]} outside 0..{len(reader) - 1}")
    try:
        batch = reader.get_batch(unique.tolist()).asnumpy()
    except Exception as err:
        raise VideoError(path, f"cannot decode frames: {_decord_message(err)}") from None
    return torch.from_numpy(batch)[torch.from_numpy(inverse.reshape(-1))]


def worker_context() -> multiprocessing.context.BaseContext:
    """Start method for processes that decode: never a plain fork of the caller.

    With decord 0.6, a child forked from a process that has already decoded a frame
    hangs in its first ``get_batch``.
    ``forkserver`` children fork from a clean server that only imported this module,
    so they start fast; ``spawn`` where forkserver does not exist.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


# ---- temporal sampling (pure) ---------------------------------------------------------
def train_indices(num_frames: int, frames: int, stride: int,
                  rng: torch.Generator | None = None) -> np.ndarray:
    """Frame indices of one training clip (random start; wraps for short videos)."""
    _check_sampling(num_frames, frames, stride)
    delta = max(num_frames - frames * stride, 0)
    start = int(torch.randint(0, delta + 1, (), generator=rng))
    return (start + np.arange(frames) * stride) % num_frames


def test_indices(num_frames: int, frames: int, stride: int, num_clips: int) -> np.ndarray:
    """``(num_clips, frames)`` indices: clip starts evenly spaced over ``[0, n - span]``."""
    _check_sampling(num_frames, frames, stride)
    starts = np.array(evenly_spaced(num_frames - frames * stride, num_clips))
    return (starts[:, None] + np.arange(frames)[None, :] * stride) % num_frames


test_indices.__test__ = False  # a library function, not a pytest test


def _check_sampling(num_frames: int, frames: int, stride: int) -> None:
    if num_frames < 1 or frames < 1 or stride < 1:
        raise ValueError(f"need num_frames, frames, stride >= 1; got {num_frames}, {frames}, "
                         f"{stride}")


# ---- dataset ---------------------------------------------------------------------------
class VideoDataset(Dataset):
    """Clips of listed videos for one split (``train``, ``val`` or ``test``).

    Readers are opened lazily in the process that reads (never pickled into workers);
    the last one stays open because the views of one video are consecutive items.
    ``cache_decoded`` decodes each video once (through the same reader) and keeps its
    frames as uint8 — or takes them from the dataset's ``decoded/`` arrays when it ships
    them (``write_decoded``); sampling and transforms still run on every access.
    ``exclude`` (``{path: reason}``, from check-videos): train drops those videos, eval
    keeps them as failed views so they count as wrong.
    """

    def __init__(self, records: Sequence[VideoRecord], cfg: DataConfig, split: str,
                 exclude: Mapping[Path, str] | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not valid; choose one of {list(SPLITS)}")
        exclude = exclude or {}
        self.split = split
        if split == "train":
            self.records, gone = split_excluded(records, exclude)
            self.known_bad: dict[int, str] = {}
            self.excluded = len(gone)
        else:
            self.records = list(records)
            self.known_bad = {i: exclude[r.path] for i, r in enumerate(self.records)
                              if r.path in exclude}
            self.excluded = len(self.known_bad)
        self.frames, self.stride, self.max_retries = cfg.frames, cfg.stride, cfg.max_retries
        self.cache_decoded = cfg.cache_decoded
        self.decoder = cfg.decoder
        self.num_clips = cfg.num_clips if split == "test" else 1
        self.num_crops = cfg.num_crops if split == "test" else 1
        if split == "train":
            self.transform: Any = TrainTransform.from_config(cfg)
        elif split == "val":  # PySlowFast's val view: the training scale and crop, centred
            self.transform = EvalTransform(cfg.train_scale[0], cfg.crop, 1, cfg.mean, cfg.std)
        else:
            self.transform = EvalTransform(cfg.test_scale, cfg.test_crop, cfg.num_crops,
                                           cfg.mean, cfg.std)
        self.failures = 0  # unreadable videos met by *this* process
        self._reader: tuple[Path, Any] | None = None
        self._decoded: dict[int, torch.Tensor | VideoError] = {}
        self._root = Path(cfg.root)
        self._stored: dict[Path, tuple[np.ndarray, int]] | None = None  # read_decoded, lazily
        self._resized: tuple[tuple[int, int], torch.Tensor] | None = None
        self._failed: dict[int, str] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_reader=None, _resized=None, _stored=None)  # nor do readers, memmaps
        return state

    @property
    def num_videos(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return self.num_videos * self.num_clips * self.num_crops

    def view(self, index: int) -> tuple[int, int, int]:
        """``index -> (video_idx, clip_idx, crop_idx)``."""
        rest, crop = divmod(index, self.num_crops)
        video, clip = divmod(rest, self.num_clips)
        return video, clip, crop

    def __getitem__(self, index: int) -> tuple:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside 0..{len(self) - 1}")
        return self._train_item(index) if self.split == "train" else self._eval_item(index)

    # -- reading --
    def _open(self, path: Path) -> Any:
        if self._reader is None or self._reader[0] != path:
            self._reader = None
            self._reader = (path, open_video(path, self.decoder))
        return self._reader[1]

    def _read(self, i: int, pick: Callable[[int], np.ndarray]) -> torch.Tensor:
        """Decode the frames ``pick(num_frames)`` of video ``i``; ``VideoError`` if unusable."""
        path = self.records[i].path
        if i in self.known_bad:
            raise VideoError(path, f"excluded ({self.known_bad[i]})")
        if not self.cache_decoded:
            reader = self._open(path)
            return read_frames(reader, pick(len(reader)), path)
        if i not in self._decoded:
            if self._stored is None:
                self._stored = read_decoded(self._root)
            stored = self._stored.get(path.resolve())
            if stored is not None:
                self._decoded[i] = torch.from_numpy(np.array(stored[0][stored[1]]))
            else:
                try:
                    reader = open_video(path, self.decoder)
                    self._decoded[i] = read_frames(reader, np.arange(len(reader)), path)
                except VideoError as err:
                    self._decoded[i] = err
        frames = self._decoded[i]
        if isinstance(frames, VideoError):
            raise frames
        return frames[torch.from_numpy(pick(len(frames)))]

    # -- items --
    def _train_item(self, index: int) -> tuple[torch.Tensor, int, int]:
        last: VideoError | None = None
        for retries in range(self.max_retries + 1):
            try:
                clip = self._read(index, lambda n: train_indices(n, self.frames, self.stride))
                return self.transform(clip), self.records[index].label, retries
            except VideoError as err:
                self.failures += 1
                last = err
                log.warning("train: cannot read %s (%s); replacing it by a random video "
                            "(%d/%d)", err.path, err.reason, retries + 1, self.max_retries)
                index = int(torch.randint(len(self.records), ()))
        raise RuntimeError(f"{self.max_retries + 1} videos in a row could not be read "
                           f"(data.max_retries={self.max_retries}); last: {last}")

    def _eval_clip(self, video: int, clip: int) -> torch.Tensor:
        key = (video, clip)
        if self._resized is None or self._resized[0] != key:
            frames = self._read(video, lambda n: test_indices(
                n, self.frames, self.stride, self.num_clips)[clip])
            self._resized = (key, self.transform.resize(frames))
        return self._resized[1]

    def _eval_item(self, index: int) -> tuple[torch.Tensor, int, int, int, int, bool]:
        video, clip, crop = self.view(index)
        label = self.records[video].label
        if video not in self._failed:
            try:
                return self.transform.crop(self._eval_clip(video, clip), crop), label, \
                    video, clip, crop, True
            except VideoError as err:
                self._failed[video] = err.reason
                self.failures += 1
                log.warning("%s: cannot read %s (%s); its views count as failed",
                            self.split, err.path, err.reason)
        size = self.transform.size
        return torch.zeros(3, self.frames, size, size), label, video, clip, crop, False
