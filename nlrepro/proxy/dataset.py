"""The proxy dataset on disk: every clip of ``generator`` as a video in the Kinetics layout.

Layout (what ``nlrepro.data.annotations`` reads)::

    <root>/<split>/<class>/<split>_<index>.mp4   libx264, yuv420p, constant frame rate
    <root>/{train,val,test}.csv                  "relative/path label" per line
    <root>/classes.json                          {"match_yellow": 0, ..., "clash_cyan": 3}
    <root>/proxy_config.json                     the ProxyConfig (and generator version) used
    <root>/decoded/<split>.npy                   the videos decoded once by the real reader

``ensure_proxy_data`` is what a sweep or a run calls before it needs the videos; the data
module itself never generates them.
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

from nlrepro.config import (ConfigError, ProxyConfig, RunConfig, add_profile_argument,
                            check_proxy_config, load_config)
from nlrepro.data.video import DECODED_DIR, open_video, read_frames, write_decoded
from nlrepro.choices import CUE_LENGTH
from nlrepro.proxy.generator import CLASSES, generator_version, render_indexed, write_video
from nlrepro.utils import remove_dead, tmp_prefix

CONFIG_FILE = "proxy_config.json"
POOL_MIN_VIDEOS = 64  # below this, starting worker processes costs more than it saves
# Options added after generator version 5, at the values that draw v5's clips: left out of
# the records (dataset folder, run ids, frame pre-training) at these values, so folders and
# runs made before them stay valid.
V5_DRAWING = {"probe_copies": 1, "cue_length": CUE_LENGTH, "task": "cuematch"}


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
    return {"generator_version": generator_version(p), "proxy": fields}


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
    remove_dead(root.parent, root.name)  # half datasets of killed generations
    if not root.exists():
        try:
            make_proxy_data(root, p)
        except OSError:
            if not root.exists():  # not a lost race with a concurrent generator
                raise
    check_existing(root, p)
    return root


def check_existing(root: Path, p: ProxyConfig, what: str = "data.root") -> None:
    """A ``ConfigError`` unless ``root`` holds the dataset of ``p`` (names what differs)."""
    want = config_record(p)
    have = _stored_record(root)
    if have is None:
        raise ConfigError(f"{what}: {str(root)!r} exists but is not a proxy dataset "
                          f"(no {CONFIG_FILE}); choose another {what} or remove it")
    if have != want:
        stored = have.get("proxy", {})
        diff = sorted(k for k in set(want["proxy"]) | set(stored)
                      if stored.get(k) != want["proxy"].get(k))
        if have.get("generator_version") != want["generator_version"]:
            diff.append("generator_version")
        raise ConfigError(f"{what}: {str(root)!r} holds a proxy dataset made with different "
                          f"settings ({', '.join(diff)}: stored {have}); remove the folder to "
                          f"regenerate it, or point {what} elsewhere")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", default=None,
                        help="folder to create; default: the profile's data.root. A folder "
                             "that already holds the same dataset is reused; any other "
                             "existing folder is an error (exit 2)")
    add_profile_argument(parser, "profile whose data.proxy gives the defaults")
    for f in dataclasses.fields(ProxyConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                            help=f"override data.proxy.{f.name}")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.profile)
    if cfg.data.proxy is None:
        raise ConfigError(f"profile {args.profile!r} has no data.proxy section; "
                          "use --profile proxy")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ProxyConfig)
             if getattr(args, f.name) is not None}
    cfg.data.proxy = dataclasses.replace(cfg.data.proxy, **given)
    if args.root is None:
        root = ensure_proxy_data(cfg)
    elif Path(args.root).exists():
        check_existing(Path(args.root), cfg.data.proxy, what="root")
        root = Path(args.root)
    else:
        root = make_proxy_data(args.root, cfg.data.proxy, progress=not args.quiet,
                               workers=args.workers)
    print(root)
    return 0
