"""Write tiny real H.264 videos (and broken ones) for the data tests.

``write_index_video`` paints each frame so that both *which frame* and *which
columns* survive H.264, resizing, cropping and flipping:
- the top half is a flat grey whose level encodes the frame index
  (``index_level(i) = 16 + 6 i``; flat areas survive compression within ±2),
- the bottom half is a horizontal ramp (``ramp_level(x) = 40 + 3 x``), so a crop's
  left column tells its x offset and a flip reverses the ramp.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

INDEX_BASE, INDEX_STEP = 16, 6
RAMP_BASE, RAMP_STEP = 40, 3
MAX_INDEX_FRAMES = (255 - INDEX_BASE) // INDEX_STEP + 1  # 40


def write_video(path: Path, frames: np.ndarray, fps: int = 25, crf: int = 10,
                faststart: bool = False, gop: int = 8) -> Path:
    """Encode uint8 ``(T, H, W, 3)`` RGB frames with libx264 (yuv420p) into ``path``.

    B-frames on and a keyframe every ``gop`` frames, as in real videos, so random
    access has to seek and reorder.

    ``T == 0`` writes a container with a video stream but no frames.
    ``faststart`` puts the index (moov) first, so a truncated copy still opens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    t, h, w = frames.shape[:3]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "bf": "2", "g": str(gop)}
        if t == 0:  # the header is otherwise written with the first packet, i.e. never
            out.start_encoding()
        for i in range(t):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i], format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def index_level(i: int | np.ndarray) -> np.ndarray:
    return INDEX_BASE + INDEX_STEP * np.asarray(i)


def ramp_level(x: int | np.ndarray) -> np.ndarray:
    return RAMP_BASE + RAMP_STEP * np.asarray(x)


def index_frames(n: int, width: int = 64, height: int = 48) -> np.ndarray:
    """``n`` frames ``(n, height, width, 3)``: top half = frame index, bottom half = x ramp."""
    if not 0 <= n <= MAX_INDEX_FRAMES:
        raise ValueError(f"n={n}: index videos hold 0..{MAX_INDEX_FRAMES} frames")
    if RAMP_BASE + RAMP_STEP * (width - 1) > 255:
        raise ValueError(f"width={width} is too wide for the ramp (max {(255 - RAMP_BASE) // 3 + 1})")
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:, : height // 2] = index_level(np.arange(n))[:, None, None, None]
    frames[:, height // 2:] = ramp_level(np.arange(width))[None, None, :, None]
    return frames


def write_index_video(path: Path, n: int, width: int = 64, height: int = 48,
                      fps: int = 25, **kwargs) -> Path:
    return write_video(path, index_frames(n, width, height), fps=fps, **kwargs)


def decode_index(top: np.ndarray) -> int:
    """The frame index painted into a (crop of the) top half: its mean grey level."""
    return int(round((float(np.mean(top)) - INDEX_BASE) / INDEX_STEP))


def decode_column(value: float) -> float:
    """The source x coordinate of a ramp value (fractional after resizing)."""
    return (value - RAMP_BASE) / RAMP_STEP


# ---- broken files ---------------------------------------------------------------------
BROKEN_KINDS = ("missing", "empty", "truncated", "truncated_faststart", "text", "zero_frames")


def write_broken(folder: Path, kind: str, name: str | None = None) -> Path:
    """One unreadable ``.mp4`` of the given kind in ``folder``; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{kind}.mp4")
    if kind == "missing":
        path.unlink(missing_ok=True)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("truncated", "truncated_faststart"):
        write_index_video(path, 40, faststart=kind == "truncated_faststart")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    elif kind == "zero_frames":
        write_video(path, np.zeros((0, 48, 64, 3), np.uint8))
    else:
        raise ValueError(f"unknown broken kind {kind!r}; choose one of {list(BROKEN_KINDS)}")
    return path
