"""Fixtures of the Figure 3 tests: one torch thread, a tiny proxy dataset, a run folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.figure3 import SMALL_PROXY, make_model, save_checkpoint
from nlrepro.config import load_config
from nlrepro.proxy.dataset import make_proxy_data


@pytest.fixture(autouse=True)
def one_thread():
    """CPU inference of a 16×32×32 clip takes ms on one thread but can take seconds on two
    when other jobs hold the cores (OpenMP barriers); the CLI defaults to one thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def proxy_root(tmp_path_factory):
    """The proxy profile's dataset (whatever its current settings), with 3 test videos."""
    root = tmp_path_factory.mktemp("proxy") / "data"
    cfg = load_config("proxy", sets=[f"data.root={root}", *SMALL_PROXY])
    return make_proxy_data(root, cfg.data.proxy, progress=False, workers=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding a Lightning-layout checkpoint of a hand-set model, and a clip."""
    from helpers.videos import write_video

    folder = tmp_path_factory.mktemp("attention")
    rng = np.random.default_rng(0)
    frames = rng.integers(20, 60, (16, 32, 32, 3)).astype(np.uint8)
    frames[0:3, 4:20, 8:24] = (230, 20, 20)      # the cue: a large red square, early
    frames[12:, 20:27, 20:27] = (230, 20, 20)    # a red probe, late
    video = write_video(folder / "clip.mp4", frames)
    ckpt = save_checkpoint(make_model(), folder / "run" / "checkpoints" / "last.ckpt")
    return {"ckpt": ckpt, "run": folder / "run", "video": video, "folder": folder}
