"""Timeline: the proxy task of generator version 7, the relations task on a 32-frame timeline.

Why (docs/PROXY.md, "Timeline"): the relations task (v6, ``relations``) ranked models by
relation kind, but two of its features decided rows by chance rather than by mechanism, and
its long clips held nothing that its short clips lacked.  Version 7 keeps v6's rule,
objects and four kinds, and changes three things:

- **two key colours** (red, blue) instead of three: "red or not" is then the whole colour
  rule, so no half-way colour solution (v6's 85.0% plateau) sits between chance and the
  relation;
- **one 32-frame timeline per clip at one frame rate.**  A short clip (``frames=8``, Tables
  2a-2f) is its last 8 frames, a long clip (``frames=32``, Table 2g) all of it, as the
  paper's 128-frame clips are 4x longer at the same rate.  The four v6 kinds happen inside
  the last 8 frames, at v6's base-frame times;
- **two kinds that reach before the short window**, which a short clip cannot classify (every
  model is at chance there, 25%) and a long clip can:

  - ``early``: cue and probe together, in different quadrants (the ``space`` kind's
    geometry), 8 to 20 frames before the window.  Every model reads it as it reads the space
    kind: longer clips see more of the action;
  - ``far``: the cue in frames 0..4, the probe at the window's end, in another quadrant: a
    relation 25 or more frames long (12+ time steps after the temporal pool), beyond what a
    stack of 3-frame temporal kernels reaches easily but one look-up for a non-local block.

The additive limits of v6 hold inside the window.  Colours stay ``KEY_PALETTE`` indices, so
frame pre-training and the oracles read them as before.
"""

from __future__ import annotations

import numpy as np

from nlrepro.choices import TIMELINE_FRAMES
from nlrepro.config import ProxyConfig
from nlrepro.proxy.draw import draw_distractors
from nlrepro.proxy.relations import (EARLY, LATE, MIDDLE, OBJECT, TOGETHER, _place,
                                      draw_objects)

TIMELINE = TIMELINE_FRAMES    # frames of the whole clip; a short clip is its last frames
WINDOW = 8                    # frames of a short clip (Tables 2a-2f)
KEYS = (0, 2)                 # KEY_PALETTE indices: red, blue
KINDS = ("time", "space", "spacetime", "chain", "early", "far")
KIND_WEIGHTS = (3 / 16, 3 / 16, 3 / 16, 3 / 16, 1 / 8, 1 / 8)
BEFORE = ("early", "far")     # the kinds whose cue is before the short window
EARLY_START = (4, 13)         # the early kind starts in frame 4..12 and lasts EARLY_LENGTH
EARLY_LENGTH = 4
FAR_START = (0, 3)            # the far kind's cue starts in frame 0..2 and lasts 2 frames
DISTRACTOR_RATE = TIMELINE // WINDOW  # distractors drift over 32 frames as v6's over 8


def render_timeline(rng: np.random.Generator, p: ProxyConfig, palette: np.ndarray,
                    cores: np.ndarray, persist_cue: bool = False) -> tuple[np.ndarray, dict]:
    """The last ``p.frames`` frames ``uint8 (T, H, W, 3)`` of a 32-frame clip, and the fields
    of its ``ClipInfo`` in the returned clip's frames (an event outside them: cue frames
    ``(0, 0)``, probe start ``T`` and no probe boxes).

    ``persist_cue`` (frame pre-training): cue and probe in different quadrants on every frame.
    """
    T, S, k = p.frames, p.size, OBJECT
    w0 = TIMELINE - WINDOW
    clip = np.full((TIMELINE, S, S, 3), rng.uniform(20, 60), np.float32)
    if p.noise:
        clip += rng.normal(0, p.noise, clip.shape).astype(np.float32)
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    cue, other = (int(c) for c in rng.permutation(KEYS))
    match = bool(rng.integers(2))
    core = int(rng.integers(len(cores)))
    quads = [int(q) for q in rng.permutation(4)]
    start = w0 + int(rng.integers(EARLY[0], EARLY[1]))
    c0, c1 = start, start + 2
    p0, p1 = w0 + int(rng.integers(LATE[0], LATE[1] + 1)), TIMELINE
    e0 = int(rng.integers(*EARLY_START))
    f0 = int(rng.integers(*FAR_START))
    spots = [_place(rng, q, S) for q in quads]
    boxes = draw_distractors(clip, rng, palette[list(KEYS)], p.distractors, DISTRACTOR_RATE)
    cue_at, probe_at = spots[0], spots[3]
    other_box = pointer = None
    if persist_cue:
        kind, (c0, c1), (p0, p1) = "spacetime", (0, TIMELINE), (0, TIMELINE)
    elif kind == "time":
        probe_at = cue_at
    elif kind == "space":
        (c0, c1) = (p0, p1) = (w0 + TOGETHER[0], w0 + TOGETHER[1])
    elif kind == "early":
        (c0, c1) = (p0, p1) = (e0, e0 + EARLY_LENGTH)
    elif kind == "far":
        c0, c1 = f0, f0 + 2
    elif kind == "chain":
        other_box = spots[1]
        pointer = (w0 + MIDDLE[0], w0 + MIDDLE[1])
    key = cue if match else other
    draw_objects(clip, palette, cores, (cue, other, key, core), cue_at, probe_at, (c0, c1),
                 (p0, p1), other_box, pointer)
    (py, px) = probe_at
    off = TIMELINE - T  # the returned clip starts at this frame of the timeline

    def local(t: int) -> int:
        """A timeline frame in the returned clip's frames, clamped to [0, T]."""
        return min(max(t - off, 0), T)

    fields = dict(label=(0 if match else 2) + core, cue_colour=cue,
                  cue_frames=(local(c0), local(c1)),  # (0, 0) when the cue ends before it
                  cue_box=(cue_at[0], cue_at[1], k), probe_start=local(p0) if p1 > off else T,
                  probe_key=key, probe_core=core,
                  distractors=tuple((t - off, y, x) for t, y, x in boxes if t >= off),
                  probe_boxes=tuple((t - off, py, px) for t in range(max(p0, off), p1)),
                  kind=kind, other_cue=(other, *other_box) if other_box else None,
                  pointer=(local(pointer[0]), local(pointer[1]), *cue_at) if pointer else None)
    return np.clip(clip[off:], 0, 255).astype(np.uint8), fields
