"""CueMatch: the synthetic proxy task, written as real H.264 videos in the Kinetics layout.

Why this task (docs/PROXY.md): a clip shows an early *cue* (a large square in one of the key
colours red, green, blue) and, much later, a *probe* (a small square whose ring has a key colour
and whose core is yellow or cyan).  The label is ``2 * (ring colour != cue colour) + core``.
In C2D every conv is 1×k×k and time is mixed only by the pools and the final average, so cue
and probe never meet before the linear classifier: its logits are a *sum* of an early part and
a late part, and no additive model can exceed 75% (of the four clips {cue a, cue b} ×
{ring a, ring b}, at most three can be right).  A non-local block can look the cue up from the
probe's position.

Layout (what ``nlrepro.data.annotations`` reads)::

    <root>/<split>/<class>/<split>_<index>.mp4   libx264, yuv420p, constant frame rate
    <root>/{train,val,test}.csv                  "relative/path label" per line
    <root>/classes.json                          {"match_yellow": 0, ..., "clash_cyan": 3}
    <root>/proxy_config.json                     the ProxyConfig (and generator version) used

Everything is deterministic from ``ProxyConfig.seed``: each clip has its own
``numpy.random.SeedSequence([seed, split, index])``, so a pool of workers and a single process
write the same bytes.  Event times are fractions of the clip: ``frames=32`` shows the same
events as ``frames=8`` at four times the frame rate (the 128-frame variant of Table 2g).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nlrepro.config import ConfigError, ProxyConfig, RunConfig
from nlrepro.data.video import DECODED_DIR, open_video, read_frames, write_decoded
from nlrepro.utils import remove_dead, tmp_prefix

# Bump when the rendering changes: a folder written by another version is not reused.
GENERATOR_VERSION = 5
# label = 2 * (probe ring colour != cue colour) + core colour
CLASSES = ("match_yellow", "match_cyan", "clash_yellow", "clash_cyan")
SPLITS = ("train", "val", "test")
CONFIG_FILE = "proxy_config.json"
BASE_FRAMES = 8  # event times and speeds are defined on an 8-frame clip
FPS = 4  # nominal: 8 frames = 2 s
POOL_MIN_VIDEOS = 64  # below this, starting worker processes costs more than it saves

# Saturated colours survive 4:2:0 chroma subsampling on objects several pixels wide.
KEY_PALETTE = np.array([[230, 30, 30], [30, 210, 30], [40, 70, 240]], np.uint8)  # R, G, B
CORE_PALETTE = np.array([[235, 225, 30], [30, 225, 225]], np.uint8)  # yellow, cyan
# Distractors are small squares in the *key* colours: "which key colours occur in the clip"
# then says nothing about the label, so a block that only averages over the clip cannot
# solve the task; it has to pick out the cue (large, early) by what it looks like.
DISTRACTOR_SIZE = 3
GOLDEN = (5 ** 0.5 - 1) / 2
PROBE_SIZE, PROBE_RING = 8, 2  # an 8×8 probe: 2-px ring in a key colour around a 4×4 core
# Event timing in units of the 8-frame clip (scaled by frames / 8).  After the proxy net's
# temporal pool (pairs of frames) the cue (frames 0-2) and the probe (frames 5-7) never share
# a time step, which is what makes C2D additive (docs/PROXY.md).
CUE_START_MAX = 1      # cue starts in frame 0..1
CUE_LENGTH = 2         # and lasts at most 2 frames (data.proxy.cue_length: 1 or 2)
PROBE_START = (5, 6)   # the probe appears in frame 5..6 and stays to the end
MAX_PROBE_COPIES = 6   # identical probes (data.proxy.probe_copies), at independent places
FRAME_TARGETS = ("objects", "label")  # data.proxy.pretrain_target (nlrepro/pretrain.py)
# Options added after generator version 5, at the values that draw v5's clips: left out of
# the records (dataset folder, run ids, frame pre-training) at these values, so folders and
# runs made before them stay valid.
V5_DRAWING = {"probe_copies": 1, "cue_length": CUE_LENGTH}


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


def check_proxy_config(p: ProxyConfig) -> None:
    """Reject sizes the task cannot be drawn at; the message names the value and the range."""
    def need(ok: bool, key: str, value: Any, valid: str) -> None:
        if not ok:
            raise ConfigError(f"data.proxy.{key}: {value!r} is not valid; {valid}")
    for key in ("num_train", "num_val", "num_test"):
        v = getattr(p, key)
        need(isinstance(v, int) and v >= 1, key, v, "give a positive number of videos")
    need(p.frames >= BASE_FRAMES and p.frames % BASE_FRAMES == 0, "frames", p.frames,
         f"choose a multiple of {BASE_FRAMES} (8, 16, 32, ...)")
    need(p.size >= 32 and p.size % 8 == 0, "size", p.size,
         "choose a multiple of 8 that is at least 32 (pixels)")
    need(8 <= p.cue_size <= p.size, "cue_size", p.cue_size, f"choose 8..{p.size} (pixels)")
    need(0 <= p.crf <= 51, "crf", p.crf, "choose 0..51 (libx264 constant rate factor)")
    need(0 <= p.noise <= 64, "noise", p.noise, "choose 0..64 (pixel noise std)")
    need(0 <= p.distractors <= 8, "distractors", p.distractors, "choose 0..8")
    need(0.0 <= p.decoys <= 1.0, "decoys", p.decoys, "choose a fraction of clips in [0, 1]")
    need(isinstance(p.pretrain_images, int) and p.pretrain_images >= 16, "pretrain_images",
         p.pretrain_images, "give at least 16 frames (one batch)")
    need(isinstance(p.pretrain_epochs, int) and p.pretrain_epochs >= 1, "pretrain_epochs",
         p.pretrain_epochs, "give a positive number of epochs")
    need(0.0 <= p.persist_cue < 1.0, "persist_cue", p.persist_cue,
         "choose a fraction in [0, 1) of training clips (1 would leave no hard clip to learn from)")
    need(p.pretrain_target in FRAME_TARGETS, "pretrain_target", p.pretrain_target,
         f"choose one of {', '.join(FRAME_TARGETS)}")
    need(isinstance(p.probe_copies, int) and 1 <= p.probe_copies <= MAX_PROBE_COPIES,
         "probe_copies", p.probe_copies, f"choose 1..{MAX_PROBE_COPIES} identical probes")
    need(isinstance(p.cue_length, int) and 1 <= p.cue_length <= CUE_LENGTH, "cue_length",
         p.cue_length, f"choose 1..{CUE_LENGTH} base frames (longer would share a time step "
         "with the probe after the temporal pool)")


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The clip's own generator: independent of how clips are spread over workers."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def render_clip(rng: np.random.Generator, p: ProxyConfig, persist_cue: bool = False
                ) -> tuple[np.ndarray, ClipInfo]:
    """One clip ``uint8 (T, H, W, 3)`` and what is in it.

    ``persist_cue`` keeps the cue on screen to the end (a curriculum clip: cue and probe share
    frames, so even per-frame convolutions see both).
    """
    T, S, k, ring = p.frames, p.size, PROBE_SIZE, PROBE_RING
    r = T // BASE_FRAMES  # frames per base frame
    clip = np.full((T, S, S, 3), rng.uniform(20, 60), np.float32)
    if p.noise:
        clip += rng.normal(0, p.noise, clip.shape).astype(np.float32)
    cue = int(rng.integers(len(KEY_PALETTE)))
    match = bool(rng.integers(2))
    key = cue if match else int((cue + rng.integers(1, len(KEY_PALETTE))) % len(KEY_PALETTE))
    core = int(rng.integers(len(CORE_PALETTE)))
    # Distractors: small squares in key colours drifting through the whole clip.
    boxes = []
    d = DISTRACTOR_SIZE
    for _ in range(p.distractors):
        pos, vel = rng.uniform(0, S - d, 2), rng.uniform(-1.5, 1.5, 2) / r
        colour = KEY_PALETTE[int(rng.integers(len(KEY_PALETTE)))]
        for t in range(T):
            y, x = np.clip(np.round(pos + vel * t), 0, S - d).astype(int)
            clip[t, y:y + d, x:x + d] = colour
            boxes.append((t, int(y), int(x)))
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
    the process had allocated before (measured: 8 in 100 encodes of one clip differed)."""
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


def _split_sizes(p: ProxyConfig) -> dict[str, int]:
    return {"train": p.num_train, "val": p.num_val, "test": p.num_test}


def _relpath(split: str, index: int, label: int) -> str:
    return f"{split}/{CLASSES[label]}/{split}_{index:06d}.mp4"


def _make_one(job: tuple[str, str, int, dict]) -> tuple[str, np.ndarray]:
    """Write one video; return its list line and its frames *as decoded* by the real reader."""
    root, split, index, values = job
    p = ProxyConfig(**values)
    frames, info = render_indexed(p, split, index)
    rel = _relpath(split, index, info.label)
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, p.crf)
    reader = open_video(path)
    return f"{rel} {info.label}", read_frames(reader, np.arange(len(reader)), path).numpy()


def recorded_fields(p: ProxyConfig) -> dict[str, Any]:
    """The config as records hold it: options added since v5 only where they change a clip."""
    return {k: v for k, v in dataclasses.asdict(p).items()
            if not (k in V5_DRAWING and v == V5_DRAWING[k])}


def config_record(p: ProxyConfig) -> dict:
    """What the videos depend on (frame pre-training settings do not change a video)."""
    fields = {k: v for k, v in recorded_fields(p).items() if not k.startswith("pretrain_")}
    return {"generator_version": GENERATOR_VERSION, "proxy": fields}


def make_proxy_data(root: str | Path, proxy_cfg: ProxyConfig, progress: bool = True,
                    workers: int = 2) -> Path:
    """Write the dataset into ``root`` (which must not exist yet); returns ``root``.

    Written into a temporary sibling folder and renamed at the end, so a killed generation
    never leaves a half dataset behind.
    """
    from tqdm import tqdm

    check_proxy_config(proxy_cfg)
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; make_proxy_data writes a new folder only "
                              "(use ensure_proxy_data to reuse a matching one)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=tmp_prefix(root.name)))
    try:
        values = dataclasses.asdict(proxy_cfg)
        jobs = [(str(tmp), split, i, values)
                for split, n in _split_sizes(proxy_cfg).items() for i in range(n)]
        bar = tqdm(total=len(jobs), desc=f"proxy data -> {root}", unit="video",
                   disable=not progress)
        results = []
        if workers > 1 and len(jobs) >= POOL_MIN_VIDEOS:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for result in pool.imap(_make_one, jobs, chunksize=16):
                    results.append(result)
                    bar.update()
        else:
            for job in jobs:
                results.append(_make_one(job))
                bar.update()
        bar.close()
        start = 0
        (tmp / DECODED_DIR).mkdir()
        for split, n in _split_sizes(proxy_cfg).items():
            lines = [line for line, _ in results[start:start + n]]
            (tmp / f"{split}.csv").write_text("\n".join(lines) + "\n")
            # Every run decodes every video once; doing it here once for all runs of a table
            # saves each run that time (docs/PROXY.md).  Same reader, same frames.
            write_decoded(tmp, split, [line.split()[0] for line in lines],
                          np.stack([frames for _, frames in results[start:start + n]]))
            start += n
        (tmp / "classes.json").write_text(
            json.dumps({name: i for i, name in enumerate(CLASSES)}, indent=2) + "\n")
        (tmp / CONFIG_FILE).write_text(json.dumps(config_record(proxy_cfg), indent=2,
                                                  sort_keys=True) + "\n")
        os.rename(tmp, root)  # atomic; fails if another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _stored_record(root: Path) -> dict | None:
    path = root / CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_proxy_data(cfg: RunConfig) -> Path:
    """Generate ``cfg.data.proxy`` into ``cfg.data.root`` unless a matching copy is there.

    A folder written with a different ProxyConfig (or generator version) is never silently
    reused or overwritten: the error names the differing keys.
    """
    p = cfg.data.proxy
    if p is None:
        raise ConfigError("data.proxy is not set: this profile has no proxy dataset to make")
    check_proxy_config(p)
    root = Path(cfg.data.root)
    want = config_record(p)
    remove_dead(root.parent, root.name)  # half datasets of killed generations
    if not root.exists():
        try:
            make_proxy_data(root, p)
        except OSError:
            if not root.exists():  # not a lost race with a concurrent generator
                raise
    have = _stored_record(root)
    if have is None:
        raise ConfigError(f"data.root: {str(root)!r} exists but is not a proxy dataset "
                          f"(no {CONFIG_FILE}); choose another data.root or remove it")
    if have != want:
        stored = have.get("proxy", {})
        diff = sorted(k for k in set(want["proxy"]) | set(stored)
                      if stored.get(k) != want["proxy"].get(k))
        if have.get("generator_version") != GENERATOR_VERSION:
            diff.append("generator_version")
        raise ConfigError(f"data.root: {str(root)!r} holds a proxy dataset made with different "
                          f"settings ({', '.join(diff)}: stored {have}); remove the folder to "
                          "regenerate it, or point data.root elsewhere")
    return root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", default=None,
                        help="folder to create (must not exist); default: the profile's "
                             "data.root, reused when it already holds the same dataset")
    parser.add_argument("--profile", default="proxy",
                        help="profile whose data.proxy gives the defaults (default proxy)")
    for f in dataclasses.fields(ProxyConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                            help=f"override data.proxy.{f.name}")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from nlrepro.config import load_config

    cfg = load_config(args.profile)
    if cfg.data.proxy is None:
        raise ConfigError(f"profile {args.profile!r} has no data.proxy section; "
                          "use --profile proxy")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ProxyConfig)
             if getattr(args, f.name) is not None}
    cfg.data.proxy = dataclasses.replace(cfg.data.proxy, **given)
    if args.root is None:
        root = ensure_proxy_data(cfg)
    else:
        root = make_proxy_data(args.root, cfg.data.proxy, progress=not args.quiet,
                               workers=args.workers)
    print(root)
    return 0
