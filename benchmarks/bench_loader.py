"""Clip loading for one DataLoader worker: decord vs PyAV, and the proxy's decode cache.

Kinetics case: one 32 × 224² training clip (64-frame span, every other frame kept) from a
10 s, 30 fps, 340×256 H.264 video (x264 defaults: crf 23, keyframe every 250 frames,
B-frames, as ffmpeg re-encodes Kinetics), random start, then the training transform
(shorter side to [256, 320], random 224² crop, flip, normalise). One thread everywhere
(decoder and torch): a DataLoader worker. The reader is opened for every clip, as the
dataset does. Both decoders return the same frames (checked).

Proxy case: ``VideoDataset`` training items of a 16-frame 32×32 clip, decoded on every
access vs decoded once and cached (``data.cache_decoded``).

Writes results/bench/loader.csv and results/bench/loader.md.
Run: ``.venv/bin/python benchmarks/bench_loader.py`` (NLREPRO_BENCH_MODE=quick|full:
fewer / more clips and passes).
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# common first: it sets OMP_WAIT_POLICY before torch is imported.
from common import (bench_mode, interleaved, load, machine, median, set_threads,  # noqa: E402
                    write_results)
import av  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from nlrepro.config import DataConfig  # noqa: E402
from nlrepro.data.annotations import VideoRecord  # noqa: E402
from nlrepro.data.transforms import TrainTransform  # noqa: E402
from nlrepro.data.video import VideoDataset, open_video, read_frames, train_indices  # noqa: E402

WIDTH, HEIGHT, FPS, SECONDS = 340, 256, 30, 10
FRAMES, STRIDE = 32, 2
MODE = bench_mode()
# passes over the clips (≥ 5: every median is of ≥ 5 runs) and random clips per pass
REPEATS = {"quick": 5, "default": 5, "full": 10}[MODE]
CLIPS = {"quick": 2, "default": 4, "full": 8}[MODE]
KINETICS = "kinetics 340x256 -> 32x224^2"
PROXY = "proxy 32x32x16 dataset item"


def scene(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Moving texture + moving boxes + sensor noise: a bit rate like real footage."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((n, height, width, 3), np.uint8)
    boxes = rng.uniform(0, 1, (6, 4))
    for t in range(n):
        base = 110 + 60 * np.sin((xx + 2.5 * t) / 17.0) * np.cos((yy - 1.5 * t) / 23.0)
        img = np.repeat(base[..., None], 3, axis=2) * np.array([1.0, 0.9, 0.8], np.float32)
        for k, (x0, y0, vx, vy) in enumerate(boxes):
            x = int((x0 * width + (vx - 0.5) * 6 * t) % (width - 40))
            y = int((y0 * height + (vy - 0.5) * 6 * t) % (height - 40))
            img[y:y + 40, x:x + 40] = (40 * k) % 255
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write(path: Path, frames: np.ndarray, fps: int, options: dict | None = None) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = options or {}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def decord_clip(path: Path, indices: np.ndarray) -> torch.Tensor:
    return read_frames(open_video(path), indices, path)


def pyav_clip(path: Path, indices: np.ndarray) -> torch.Tensor:
    """Seek to the keyframe before the first index, decode forward, keep the wanted frames."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    out: list[np.ndarray | None] = [None] * len(indices)
    last = int(max(indices))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate = stream.average_rate
        first = int(min(indices))
        container.seek(int(first / rate / stream.time_base), backward=True, any_frame=False,
                       stream=stream)
        for frame in container.decode(stream):
            i = int(round(frame.pts * stream.time_base * rate))
            if i in wanted:
                out[wanted[i]] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return torch.from_numpy(np.stack(out))


def kinetics_case(folder: Path) -> tuple[list[dict], dict[str, float]]:
    """Per-clip times, variants back to back on the same clip (order alternating), so a
    burst of load hits a pair alike; ratios are medians of the per-clip pairs."""
    path = write(folder / "clip340x256.mp4", scene(FPS * SECONDS, WIDTH, HEIGHT), FPS)
    n = len(open_video(path))
    gen = torch.Generator().manual_seed(0)
    starts = [train_indices(n, FRAMES, STRIDE, gen) for _ in range(CLIPS)]
    a, b = decord_clip(path, starts[0]), pyav_clip(path, starts[0])
    assert a.shape == (FRAMES, HEIGHT, WIDTH, 3) and torch.equal(a, b), "decoders disagree"
    transform = TrainTransform([256, 320], 224)
    decoded = {k: decord_clip(path, idx) for k, idx in enumerate(starts)}
    variants = {
        "decord": lambda k: decord_clip(path, starts[k]),
        "pyav": lambda k: pyav_clip(path, starts[k]),
        "decord + transform": lambda k: transform(decord_clip(path, starts[k])),
        "pyav + transform": lambda k: transform(pyav_clip(path, starts[k])),
        "transform only": lambda k: transform(decoded[k]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(REPEATS + 1):  # the first pass warms up
        for k in range(CLIPS):
            order = list(variants) if (rep + k) % 2 == 0 else list(variants)[::-1]
            for name in order:
                t0 = time.perf_counter()
                variants[name](k)
                if rep:
                    times[name].append(time.perf_counter() - t0)
    ratios = {
        "decode": median(p / d for d, p in zip(times["decord"], times["pyav"])),
        "decode + transform": median(p / d for d, p in zip(times["decord + transform"],
                                                           times["pyav + transform"])),
    }
    rows = [{"case": KINETICS, "variant": name, "clips_per_s": 1 / median(t),
             "ms_per_clip": 1e3 * median(t), "best_ms_per_clip": 1e3 * min(t),
             "samples": len(t)} for name, t in times.items()]
    return rows, ratios


def proxy_case(folder: Path) -> list[dict]:
    rng = np.random.default_rng(1)
    videos = [write(folder / f"proxy{i}.mp4", rng.integers(0, 255, (16, 32, 32, 3), np.uint8), 8,
                    {"crf": "20"}) for i in range(16)]
    records = [VideoRecord(p, 0, p.stem) for p in videos]
    cfg = dict(frames=16, stride=1, train_scale=[32, 32], crop=32, max_retries=0)
    plain = VideoDataset(records, DataConfig(**cfg), "train")
    cached = VideoDataset(records, DataConfig(**cfg, cache_decoded=True), "train")
    for i in range(len(cached)):
        cached[i]  # fill the cache: later epochs only sample and transform

    def epoch(ds):
        return lambda: [ds[i] for i in range(len(ds))]

    times = interleaved({"decode every access": epoch(plain), "cache_decoded": epoch(cached)},
                        repeats=REPEATS)
    return [{"case": PROXY, "variant": name,
             "clips_per_s": len(records) / median(t), "ms_per_clip": 1e3 * median(t) / len(records),
             "best_ms_per_clip": 1e3 * min(t) / len(records),
             "samples": len(t)} for name, t in times.items()]


def main() -> None:
    set_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows, ratios = kinetics_case(Path(tmp))
        rows += proxy_case(Path(tmp))
    df = pd.DataFrame(rows)
    by = {(r["case"], r["variant"]): r["clips_per_s"] for r in rows}
    md = [f"# Clip loading, one worker ({machine()}; mode {MODE}; load {load()})", "",
          f"Kinetics case: {CLIPS} random clips × {REPEATS} passes, each clip timed with every "
          "variant back to back (order alternating), so load from other processes hits a pair "
          "alike; absolute numbers move with the load, the paired ratios much less. Video: "
          "10 s 30 fps 340×256 H.264 (x264 defaults, keyframe every 250 frames, B-frames); "
          "clip: random 64-frame window, every other frame kept (32), reader opened per clip; "
          "transform: scale jitter [256, 320] + 224² crop + flip + normalise; one thread. "
          "Both decoders return identical frames. Proxy case: a pass over 16 dataset items "
          f"per run, {REPEATS} runs interleaved.", "",
          df.to_markdown(index=False, floatfmt=".2f"), "",
          f"- decoding, decord / PyAV clips/s (median of per-clip pairs): "
          f"**{ratios['decode']:.2f}×**",
          f"- decode + transform, decord / PyAV: **{ratios['decode + transform']:.2f}×**",
          f"- proxy items, cache_decoded / decode every access: "
          f"**{by[(PROXY, 'cache_decoded')] / by[(PROXY, 'decode every access')]:.1f}×**"]
    print(write_results("loader", df, md).read_text())


if __name__ == "__main__":
    main()
