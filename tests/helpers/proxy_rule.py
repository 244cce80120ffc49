"""The proxy task's rule read off pixels (oracle for generator tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nlrepro.proxy import generator


def _nearest(img: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour per pixel, and whether it is near (L1 < 90)."""
    dist = np.abs(img.astype(np.int32)[..., None, :] - palette.astype(np.int32)).sum(-1)
    return dist.argmin(-1), dist.min(-1) < 90


def label_from_pixels(cue_pixels: np.ndarray, probe_frame: np.ndarray) -> int:
    """2 * (ring colour != cue colour) + core colour.

    The cue is the dominant key colour of ``cue_pixels`` (its 16×16 square outnumbers the
    small key-coloured distractors); the core is the yellow/cyan square of ``probe_frame`` and
    the ring the key colour right around it."""
    which, near = _nearest(cue_pixels, generator.KEY_PALETTE)
    cue = int(np.bincount(which[near], minlength=3).argmax())
    which, near = _nearest(probe_frame, generator.CORE_PALETTE)
    core = int(np.bincount(which[near], minlength=2).argmax())
    ys, xs = np.nonzero(near & (which == core))
    band = probe_frame[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3]
    which, near = _nearest(band, generator.KEY_PALETTE)  # the 2-px ring around the core
    ring = int(np.bincount(which[near], minlength=3).argmax())
    return (0 if ring == cue else 2) + core


def relation_label_from_pixels(frames: np.ndarray) -> int:
    """The relations task's rule read off a whole clip (``(T, H, W, 3)`` decoded frames).

    The probe is the frame with the most core-coloured pixels; its ring and core are read as
    above. The cue's colour: with a white pointer on screen (the chain kind), the key colour
    under the pointer's place in the frames before it; otherwise the dominant key colour of
    the clip's solid squares, the probe's own box left out in the frames that show it."""
    which, near = _nearest(frames, generator.CORE_PALETTE)
    shown = near.sum(axis=(1, 2))
    probe = frames[int(shown.argmax())]
    which_p, near_p = _nearest(probe, generator.CORE_PALETTE)
    core = int(np.bincount(which_p[near_p], minlength=2).argmax())
    ys, xs = np.nonzero(near_p & (which_p == core))
    y0, y1, x0, x1 = max(ys.min() - 2, 0), ys.max() + 3, max(xs.min() - 2, 0), xs.max() + 3
    wk, nk = _nearest(probe[y0:y1, x0:x1], generator.KEY_PALETTE)
    ring = int(np.bincount(wk[nk], minlength=3).argmax())
    white = (np.abs(frames.astype(np.int32) - 240).sum(-1) < 60)
    counts = white.sum(axis=(1, 2))
    if counts.max() >= 30:  # the chain's pointer
        t = int(counts.argmax())
        wy, wx = np.nonzero(white[t])
        first = int(np.nonzero(counts >= 30)[0][0])
        region = frames[:first, wy.min():wy.max() + 1, wx.min():wx.max() + 1]
        which, near = _nearest(region, generator.KEY_PALETTE)
    else:
        which, near = _nearest(frames, generator.KEY_PALETTE)
        near = near.copy()
        near[shown > 8, y0:y1, x0:x1] = False
    # Solid squares only: a pixel counts when the pixels 3 px below, right and diagonally
    # have its colour too, which the 3×3 distractors never do.
    same = near[..., :-3, :-3] & near[..., 3:, :-3] & near[..., :-3, 3:] & near[..., 3:, 3:]
    w = which[..., :-3, :-3]
    same &= (w == which[..., 3:, :-3]) & (w == which[..., :-3, 3:]) & (w == which[..., 3:, 3:])
    which, near = w, same
    cue = int(np.bincount(which[near], minlength=3).argmax())
    return (0 if ring == cue else 2) + core


def draw_clips(p: Any, n: int, split: str = "train") -> list:
    """The first ``n`` clips of ``split`` exactly as the dataset of ``p`` holds them."""
    return [generator.render_indexed(p, split, i) for i in range(n)]


def quadrant(y: int, x: int, size: int = 32) -> int:
    """Which quadrant (0..3, row-major) of a ``size``-pixel frame the point (y, x) is in."""
    return 2 * (y >= size // 2) + (x >= size // 2)


def decode(path: Path) -> np.ndarray:
    """Every frame of a video file as decord decodes it, ``uint8 (T, H, W, 3)``."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()
