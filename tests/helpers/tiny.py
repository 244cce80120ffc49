"""A tiny labelled data root over the session's test videos, and the settings that train the
proxy network on it in seconds (no proxy generation, no frame pre-training)."""

from __future__ import annotations

import shutil
from pathlib import Path

GOOD = ["index40", "index12", "one_frame"]


def write_root(root: Path, videos: dict[str, Path], val: list[str] | None = None) -> Path:
    """train: 4 readable videos, labels 0..3; val and test: ``val`` (default: the readable 3)."""
    (root / "v").mkdir(parents=True)
    for path in videos.values():
        if path.exists():
            shutil.copy(path, root / "v" / path.name)
    train = [*GOOD, "index40"]
    (root / "train.csv").write_text("".join(f"v/{n}.mp4 {i}\n" for i, n in enumerate(train)))
    for split in ("val", "test"):
        (root / f"{split}.csv").write_text(
            "".join(f"v/{n}.mp4 {i % 4}\n" for i, n in enumerate(val or GOOD)))
    return root


def tiny_sets(root: Path, *extra: str) -> list[str]:
    """``--set`` items for the proxy profile on ``root``: 2 steps an epoch, one thread."""
    return [f"data.root={root}", "data.proxy=null", "model.pretrained=null",
            "data.class_index=null", "data.frames=4", "data.stride=2", "data.train_scale=[32,40]",
            "data.crop=32", "data.test_scale=32", "data.test_crop=32", "data.num_clips=1",
            "data.num_crops=1", "data.batch_size=2", "data.num_workers=0",
            "data.cache_decoded=false", "trainer.max_epochs=1", "trainer.threads=1",
            "trainer.log_every_n_steps=1", "trainer.deterministic=true", *extra]


def write_grid(path: Path, epochs: list[int]) -> Path:
    """A grid of one run per entry of ``epochs`` (its trainer.max_epochs); the runs also differ
    in their learning rate (table ``t``, seed 0)."""
    lines = ["table: t", "seeds: [0]", "rows:"]
    lines += [f"  - {{label: r{i}, set: {{optim.lr: {0.001 * (i + 1):g}, "
              f"trainer.max_epochs: {n}}}}}" for i, n in enumerate(epochs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep_cmd(grid: Path, results: Path, root: Path, workers: int, *extra: str) -> list[str]:
    """``python -m nlrepro sweep`` on ``grid`` with the tiny settings (epochs from the grid)."""
    import sys

    cmd = [sys.executable, "-m", "nlrepro", "sweep", str(grid), "--profile", "proxy",
           "--results", str(results)]
    for s in tiny_sets(root, f"launcher.local_workers={workers}", *extra):
        if not s.startswith("trainer.max_epochs="):
            cmd += ["--set", s]
    return cmd
