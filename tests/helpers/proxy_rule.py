"""The proxy task's rule read off pixels (oracle for generator tests)."""

from __future__ import annotations

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
