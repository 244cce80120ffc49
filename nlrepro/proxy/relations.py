"""Relations: the proxy task of generator version 6, one relation *kind* drawn per clip.

Why (docs/PROXY.md, "Relations"): CueMatch (``generator``) has one relation, so every model
either finds it (100%) or stays at the additive level (50%) and Table 2 ties at the ceiling.
Here every clip keeps CueMatch's rule, ``label = 2 * (probe ring colour != cue colour) + core``,
but *where and when* cue and probe appear is one of four kinds, each reachable by a different
mechanism, so a model scores on the kinds it has a mechanism for:

- ``time``: cue early and probe late at the same place (a time-only block can relate them);
- ``space``: cue and probe in the same frames, in different quadrants (a space-only block
  relates them; convolutions only once their receptive field spans two quadrants);
- ``spacetime``: cue early in one quadrant, probe late in another (needs both);
- ``chain``: two cues early (colours a, b), a white pointer later on cue a's place, the probe
  late in a third quadrant; a clash ring is always b, so a single look-up from the probe sees
  {a, b} either way and stays at chance: the pointer must first take a's colour from the
  same place (one look-up), then the probe from the pointer (a second).

Objects are 8×8, each inside one quadrant of the frame, so at res4 (a 2×2 grid for 32×32
frames) different quadrants are different positions.  Event times are in base frames
(``BASE_FRAMES``), scaled by ``frames / 8`` as in CueMatch: after the proxy's temporal pool
early and late events never share a time step, so C2D stays additive on every kind but
``space``.
"""

from __future__ import annotations

import numpy as np

from nlrepro.choices import BASE_FRAMES, RELATION_KINDS
from nlrepro.config import ProxyConfig
from nlrepro.proxy.draw import draw_distractors

OBJECT = 8                  # cue, probe and pointer side (pixels)
RING = 2                    # the probe's ring around a 4×4 core
POINTER = np.array([240, 240, 240], np.uint8)
EARLY = (0, 2)              # cues start in base frame 0..1 and last 2 base frames
LATE = (5, 6)               # probes start in base frame 5..6 and stay to the end
MIDDLE = (3, 5)             # the chain's pointer: [3, 5)
TOGETHER = (2, 6)           # the space kind: cue and probe both on [2, 6)


def _place(rng: np.random.Generator, quadrant: int, size: int) -> tuple[int, int]:
    """Top-left corner of an object inside ``quadrant`` (0..3, row-major) of a frame whose
    quadrants are ``size // 2`` wide; even pixels (4:2:0 chroma)."""
    half = size // 2
    y0, x0 = half * (quadrant // 2), half * (quadrant % 2)
    jy, jx = (2 * int(v) for v in rng.integers(0, (half - OBJECT) // 2 + 1, 2))
    return y0 + jy, x0 + jx


def draw_objects(clip: np.ndarray, palette: np.ndarray, cores: np.ndarray,
                 colours: tuple[int, int, int, int], cue_at: tuple[int, int],
                 probe_at: tuple[int, int], cue_frames: tuple[int, int],
                 probe_frames: tuple[int, int], other_box: tuple[int, int] | None,
                 pointer: tuple[int, int] | None) -> None:
    """Draw the chain's second cue and pointer (when given), the cue, and the probe (ring in
    the ``key`` colour around a ``core``) into ``clip``; ``colours`` = (cue, other, key, core).
    Shared by v6 and v7 (``timeline``), which place the same objects on different clocks."""
    cue, other, key, core = colours
    (c0, c1), (p0, p1), k = cue_frames, probe_frames, OBJECT
    if other_box is not None and pointer is not None:  # the second cue, then the pointer
        clip[c0:c1, other_box[0]:other_box[0] + k, other_box[1]:other_box[1] + k] = palette[other]
        clip[pointer[0]:pointer[1], cue_at[0]:cue_at[0] + k, cue_at[1]:cue_at[1] + k] = POINTER
    clip[c0:c1, cue_at[0]:cue_at[0] + k, cue_at[1]:cue_at[1] + k] = palette[cue]
    (py, px) = probe_at
    clip[p0:p1, py:py + k, px:px + k] = palette[key]
    clip[p0:p1, py + RING:py + k - RING, px + RING:px + k - RING] = cores[core]


def render_relation(rng: np.random.Generator, p: ProxyConfig, palette: np.ndarray,
                    cores: np.ndarray, persist_cue: bool = False) -> tuple[np.ndarray, dict]:
    """One clip ``uint8 (T, H, W, 3)`` and the fields of its ``ClipInfo``.

    ``persist_cue`` (frame pre-training): cue and probe in different quadrants on every frame,
    so any frame shows both objects.
    """
    T, S, k = p.frames, p.size, OBJECT
    r = T // BASE_FRAMES
    clip = np.full((T, S, S, 3), rng.uniform(20, 60), np.float32)
    if p.noise:
        clip += rng.normal(0, p.noise, clip.shape).astype(np.float32)
    kind = RELATION_KINDS[int(rng.integers(len(RELATION_KINDS)))]
    cue = int(rng.integers(len(palette)))
    other = int((cue + rng.integers(1, len(palette))) % len(palette))
    match = bool(rng.integers(2))
    core = int(rng.integers(len(cores)))
    quads = [int(q) for q in rng.permutation(4)]
    start = r * int(rng.integers(EARLY[0], EARLY[1]))
    c0, c1 = start, start + r * 2
    p0, p1 = r * int(rng.integers(LATE[0], LATE[1] + 1)), T
    # Every position is drawn for every clip (one stream whatever the kind).
    spots = [_place(rng, q, S) for q in quads]
    boxes = draw_distractors(clip, rng, palette, p.distractors, r)
    cue_at, probe_at = spots[0], spots[3]  # quadrants quads[0] and quads[3] differ
    other_box = pointer = None
    if persist_cue:
        kind, (c0, c1), (p0, p1) = "spacetime", (0, T), (0, T)
    elif kind == "time":
        probe_at = cue_at
    elif kind == "space":
        (c0, c1) = (p0, p1) = (r * TOGETHER[0], r * TOGETHER[1])
    elif kind == "chain":
        other_box = spots[1]
        pointer = (r * MIDDLE[0], r * MIDDLE[1])
    key = cue if match else other
    draw_objects(clip, palette, cores, (cue, other, key, core), cue_at, probe_at, (c0, c1),
                 (p0, p1), other_box, pointer)
    (py, px) = probe_at
    fields = dict(label=(0 if match else 2) + core, cue_colour=cue, cue_frames=(c0, c1),
                  cue_box=(cue_at[0], cue_at[1], k), probe_start=p0, probe_key=key,
                  probe_core=core, distractors=tuple(boxes),
                  probe_boxes=tuple((t, py, px) for t in range(p0, p1)), kind=kind,
                  other_cue=(other, *other_box) if other_box else None,
                  pointer=(*pointer, *cue_at) if pointer else None)
    return np.clip(clip, 0, 255).astype(np.uint8), fields
