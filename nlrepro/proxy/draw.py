"""Drawing shared by both proxy tasks (CueMatch in ``generator``, ``relations``)."""

from __future__ import annotations

import numpy as np

DISTRACTOR_SIZE = 3  # side of a distractor square (pixels)


def draw_distractors(clip: np.ndarray, rng: np.random.Generator, palette: np.ndarray,
                     count: int, r: int) -> list[tuple[int, int, int]]:
    """Draw ``count`` small squares in palette colours drifting through the whole clip
    (speeds per base frame; ``r`` frames per base frame) into ``clip`` ``(T, S, S, 3)``;
    returns the ``(t, y, x)`` of every square drawn.

    Being in the key colours, they make "which key colours occur" say little about the
    label: a model has to pick out the task's objects by what they look like."""
    T, S, d = clip.shape[0], clip.shape[1], DISTRACTOR_SIZE
    boxes = []
    for _ in range(count):
        pos, vel = rng.uniform(0, S - d, 2), rng.uniform(-1.5, 1.5, 2) / r
        colour = palette[int(rng.integers(len(palette)))]
        for t in range(T):
            y, x = np.clip(np.round(pos + vel * t), 0, S - d).astype(int)
            clip[t, y:y + d, x:x + d] = colour
            boxes.append((t, int(y), int(x)))
    return boxes
