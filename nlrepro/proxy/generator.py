"""CueMatch: the synthetic proxy task, one clip at a time (pixels, ground truth, H.264 file).

Why this task (docs/PROXY.md): a clip shows an early *cue* (a large square in one of the key
colours red, green, blue) and, much later, a *probe* (a small square whose ring has a key colour
and whose core is yellow or cyan).  The label is ``2 * (ring colour != cue colour) + core``.
In C2D every conv is 1×k×k and time is mixed only by the pools and the final average, so cue
and probe never meet before the linear classifier: its logits are a *sum* of an early part and
a late part, and no additive model can exceed 75% (of the four clips {cue a, cue b} ×
{ring a, ring b}, at most three can be right).  A non-local block can look the cue up from the
probe's position.

``nlrepro.proxy.dataset`` writes the clips as a dataset in the Kinetics layout.

Everything is deterministic from ``ProxyConfig.seed``: each clip has its own
``numpy.random.SeedSequence([seed, split, index])``, so a pool of workers and a single process
write the same bytes.  Event times are fractions of the clip: ``frames=32`` shows the same
events as ``frames=8`` at four times the frame rate (the 128-frame variant of Table 2g).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nlrepro.choices import BASE_FRAMES, PROXY_CLASSES, SPLITS
from nlrepro.config import ProxyConfig
from nlrepro.proxy.draw import draw_distractors
from nlrepro.proxy.relations import render_relation
from nlrepro.proxy.timeline import render_timeline

# Bump when the rendering changes: a folder written by another version is not reused.
# CueMatch is version 5; the relations task (nlrepro.proxy.relations) is version 6; the
# timeline task (nlrepro.proxy.timeline) is version 7.
GENERATOR_VERSION = 5
VERSIONS = {"cuematch": GENERATOR_VERSION, "relations": 6, "timeline": 7}
# label = 2 * (probe ring colour != cue colour) + core colour
CLASSES = PROXY_CLASSES
FPS = 4  # nominal: 8 frames = 2 s

# Saturated colours survive 4:2:0 chroma subsampling on objects several pixels wide.
KEY_PALETTE = np.array([[230, 30, 30], [30, 210, 30], [40, 70, 240]], np.uint8)  # R, G, B
CORE_PALETTE = np.array([[235, 225, 30], [30, 225, 225]], np.uint8)  # yellow, cyan
GOLDEN = (5 ** 0.5 - 1) / 2
PROBE_SIZE, PROBE_RING = 8, 2  # an 8×8 probe: 2-px ring in a key colour around a 4×4 core
# Event timing in units of the 8-frame clip (BASE_FRAMES, scaled by frames / 8).  After the
# proxy net's temporal pool (pairs of frames) the cue (frames 0-2) and the probe (frames 5-7)
# never share a time step, which is what makes C2D additive (docs/PROXY.md).
CUE_START_MAX = 1      # cue starts in frame 0..1 and lasts data.proxy.cue_length frames
PROBE_START = (5, 6)   # the probe appears in frame 5..6 and stays to the end


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What was drawn (for oracles and attention checks): label and event geometry."""

    label: int
    cue_colour: int
    cue_frames: tuple[int, int]            # [start, stop)
    cue_box: tuple[int, int, int]          # y, x, side
    probe_start: int
    probe_key: int                         # ring colour (KEY_PALETTE index)
    probe_core: int                        # core colour (CORE_PALETTE index)
    distractors: tuple[tuple[int, int, int], ...] = ()  # (t, y, x) of every distractor square
    probe_boxes: tuple[tuple[int, int, int], ...] = ()  # (t, y, x) of the PROBE_SIZE probe
    decoy_square: tuple[int, int, int] | None = None     # y, x, side over the probe's frames
    decoy_ring: tuple[int, int] | None = None            # y, x of a probe-like ring, cue's frames
    # The relations tasks (v6, v7) only; left out of the repr, which v5's digest test hashes.
    kind: str = dataclasses.field(default="cuematch", repr=False)  # RELATION_KINDS
    # chain: colour, y, x of the second cue; t0, t1, y, x of the pointer
    other_cue: tuple[int, int, int] | None = dataclasses.field(default=None, repr=False)
    pointer: tuple[int, int, int, int] | None = dataclasses.field(default=None, repr=False)


def generator_version(p: ProxyConfig) -> int:
    """The version that draws ``p``'s clips (recorded with every dataset folder)."""
    return VERSIONS[p.task]


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The clip's own generator: independent of how clips are spread over workers."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def render_clip(rng: np.random.Generator, p: ProxyConfig, persist_cue: bool = False
                ) -> tuple[np.ndarray, ClipInfo]:
    """One clip ``uint8 (T, H, W, 3)`` and what is in it.

    ``persist_cue`` keeps the cue on screen to the end (a curriculum clip: cue and probe share
    frames, so even per-frame convolutions see both).
    """
    if p.task == "relations":
        clip, fields = render_relation(rng, p, KEY_PALETTE, CORE_PALETTE, persist_cue)
        return clip, ClipInfo(**fields)
    if p.task == "timeline":
        clip, fields = render_timeline(rng, p, KEY_PALETTE, CORE_PALETTE, persist_cue)
        return clip, ClipInfo(**fields)
    T, S, k, ring = p.frames, p.size, PROBE_SIZE, PROBE_RING
    r = T // BASE_FRAMES  # frames per base frame
    clip = np.full((T, S, S, 3), rng.uniform(20, 60), np.float32)
    if p.noise:
        clip += rng.normal(0, p.noise, clip.shape).astype(np.float32)
    cue = int(rng.integers(len(KEY_PALETTE)))
    match = bool(rng.integers(2))
    key = cue if match else int((cue + rng.integers(1, len(KEY_PALETTE))) % len(KEY_PALETTE))
    core = int(rng.integers(len(CORE_PALETTE)))
    boxes = draw_distractors(clip, rng, KEY_PALETTE, p.distractors, r)
    c0 = r * int(rng.integers(CUE_START_MAX + 1))
    c1 = T if persist_cue else c0 + r * p.cue_length
    cy, cx = (int(v) for v in rng.integers(0, S - p.cue_size + 1, 2))
    p0 = r * int(rng.integers(PROBE_START[0], PROBE_START[1] + 1))
    # Decoys (drawn under the cue and the probe, which stay whole): a cue-like square over
    # the probe's frames and a probe-like ring over the cue's, in random colours.  Averaged
    # over time, "which big square" and "which ring" are then ambiguous: only a lookup that
    # picks the right frames tells cue from decoy.  Drawn for every clip (same stream), kept
    # for a fraction; never with a persisting cue, which would look like the decoy square.
    dy, dx = (int(v) for v in rng.integers(0, S - p.cue_size + 1, 2))
    ry, rx = (int(v) for v in 2 * rng.integers(0, (S - k) // 2 + 1, 2))
    square_key, ring_key = (int(c) for c in rng.integers(len(KEY_PALETTE), size=2))
    ring_core = int(rng.integers(len(CORE_PALETTE)))
    decoys = rng.uniform() < p.decoys and not persist_cue
    if decoys:
        clip[p0:T, dy:dy + p.cue_size, dx:dx + p.cue_size] = KEY_PALETTE[square_key]
        clip[c0:c1, ry:ry + k, rx:rx + k] = KEY_PALETTE[ring_key]
        clip[c0:c1, ry + ring:ry + k - ring, rx + ring:rx + k - ring] = CORE_PALETTE[ring_core]
    # The cue: a large square in a key colour, early in the clip.
    clip[c0:c1, cy:cy + p.cue_size, cx:cx + p.cue_size] = KEY_PALETTE[cue]
    # The probe: late, on even pixels (4:2:0 chroma), drifting 0 or 2 px per 2 base frames;
    # copies (probe_copies) are drawn last, so one copy leaves generator v5's clip.
    probe_boxes = []
    for _ in range(p.probe_copies):
        pos = 2 * rng.integers(1, (S - k) // 2, 2)
        vel = 2 * rng.integers(-1, 2, 2)
        for t in range(p0, T):
            y, x = np.clip(pos + vel * ((t - p0) // (2 * r)), 0, S - k)
            clip[t, y:y + k, x:x + k] = KEY_PALETTE[key]
            clip[t, y + ring:y + k - ring, x + ring:x + k - ring] = CORE_PALETTE[core]
            probe_boxes.append((t, int(y), int(x)))
    label = (0 if match else 2) + core
    info = ClipInfo(label=label, cue_colour=cue, cue_frames=(c0, c1),
                    cue_box=(cy, cx, p.cue_size), probe_start=p0, probe_key=key,
                    probe_core=core, distractors=tuple(boxes), probe_boxes=tuple(probe_boxes),
                    decoy_square=(dy, dx, p.cue_size) if decoys else None,
                    decoy_ring=(ry, rx) if decoys else None)
    return np.clip(clip, 0, 255).astype(np.uint8), info


def write_video(path: Path, frames: np.ndarray, crf: int, fps: int = FPS) -> None:
    """H.264 (libx264, yuv420p): byte-identical output for the same frames.

    Two settings make it so. One thread: PyAV's default (auto, sliced) is not bit-exact. And
    no macroblock-tree rate control (``mbtree=0``): on these tiny frames x264's mb-tree reads
    memory it never wrote, so the same frames gave one of several streams depending on what
    the process had allocated before (docs/PROXY.md)."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={
            "crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        container.metadata.clear()
        for t, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = t  # explicit time stamps: nothing left to the muxer's clock
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def persists(index: int, fraction: float) -> bool:
    """Whether training clip ``index`` is a curriculum clip: a low-discrepancy sequence, so
    any prefix of the training set holds the intended fraction."""
    return (index * GOLDEN) % 1.0 < fraction


def render_indexed(p: ProxyConfig, split: str, index: int) -> tuple[np.ndarray, ClipInfo]:
    """Clip ``index`` of ``split`` exactly as the dataset holds it (curriculum included), for
    the writer and for anything that needs the ground truth of a stored video."""
    return render_clip(clip_rng(p.seed, split, index), p,
                       persist_cue=split == "train" and persists(index, p.persist_cue))
