"""Real 2-process Lightning DDP runs (CPU, gloo) of ``nlrepro train`` on the proxy.

Two processes at batch b/2 with synchronised BN must train exactly as one process at batch b:
the sampler deals each global batch to the ranks (nlrepro/data/samplers.py), BN statistics
and gradients are pooled over the ranks.  The runs are in float64 (``trainer.precision:
64-true``) so that "exactly" can be tested: in float32 the two summation orders differ by
~1e-7 and a few optimiser steps amplify that to ~1e-4 (measured), which would hide a real
difference; in float64 the measured differences are <= 1e-13 for the losses and <= 1e-9 for
the weights (the W_z / g / φ biases of the NL block, whose true gradient is zero: AdamW turns
their rounding noise into tiny updates).  Any algorithmic difference (BN per rank, another
global batch, gradients summed instead of averaged) shows at >= 1e-4.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = 3
STEPS = EPOCHS * 3  # 48 training videos, global batch 16
LOSS_TOL, WEIGHT_TOL = 1e-10, 1e-7
COMMON = ["data.proxy.num_train=48", "data.proxy.num_val=16",
          # 15 test videos x 3 clips = 45 views: odd, and no multiple of the batch per rank
          "data.proxy.num_test=15", "data.num_clips=3",
          "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
          "trainer.log_every_n_steps=1", "trainer.deterministic=true", "data.num_workers=0",
          "trainer.threads=1", f"trainer.max_epochs={EPOCHS}", "model.nonlocal.blocks=1",
          "data.flip=false", "trainer.precision=64-true", "trainer.sync_batchnorm=true",
          "trainer.precise_bn_batches=2"]
ONE = ["data.batch_size=16"]
TWO = ["data.batch_size=8", "trainer.devices=2", "trainer.strategy=ddp",
       "trainer.accelerator=cpu"]


def cli(run_dir: Path, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nlrepro", "train", "--profile", "proxy", "--run-dir",
           str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train(run_dir: Path, sets: list[str]) -> dict:
    res = subprocess.run(cli(run_dir, sets), capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same run with 1 process at batch 16 and with 2 processes at batch 8 each."""
    tmp = tmp_path_factory.mktemp("ddp")
    common = [*COMMON, f"data.root={tmp / 'proxy'}"]
    out: dict = {"common": common, "tmp": tmp}
    for name, sets in (("one", ONE), ("two", TWO)):
        t0 = time.time()
        out[name] = train(tmp / name, [*common, *sets])
        out[f"{name}_s"] = time.time() - t0
        out[f"{name}_dir"] = tmp / name
    print(f"\n1 process {out['one_s']:.1f}s, 2 processes {out['two_s']:.1f}s", file=sys.stderr)
    return out


def losses(run_dir: Path) -> pd.Series:
    df = pd.read_csv(run_dir / "metrics.csv")
    return df.dropna(subset=["train/loss"]).set_index("step")["train/loss"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_two_processes_at_half_batch_train_as_one(runs: dict) -> None:
    one, two = runs["one"], runs["two"]
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["steps"] == two["steps"] == STEPS
    la, lb = losses(runs["one_dir"]), losses(runs["two_dir"])
    assert len(la) == len(lb) == STEPS and list(la.index) == list(lb.index)
    loss_diff = float((la - lb).abs().max())
    wa, wb = weights(runs["one_dir"]), weights(runs["two_dir"])
    assert wa.keys() == wb.keys()
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"\nmax |loss diff| over {STEPS} steps {loss_diff:.3g}, "
          f"max |weight diff| {weight_diff:.3g}", file=sys.stderr)
    assert loss_diff <= LOSS_TOL
    assert weight_diff <= WEIGHT_TOL
    for key in ("val/loss", "val/top1_clip"):
        assert one["metrics"][key] == pytest.approx(two["metrics"][key], abs=1e-9), key


def test_multiview_test_counts_every_video_once_on_two_ranks(runs: dict) -> None:
    one, two = runs["one"]["metrics"], runs["two"]["metrics"]
    for m in (one, two):
        assert m["test/videos"] == 15 and m["test/videos_failed"] == 0
        assert m["test/views"] == 45 and m["test/views_per_video"] == 3.0
    va = pd.read_csv(runs["one_dir"] / "test_videos.csv")
    vb = pd.read_csv(runs["two_dir"] / "test_videos.csv")
    assert list(vb["video_idx"]) == list(range(15)) and (vb["views"] == 3).all()
    assert (va[["video_idx", "label", "views", "top1"]] ==
            vb[["video_idx", "label", "views", "top1"]]).all().all()
    assert float((va["p_label"] - vb["p_label"]).abs().max()) <= 1e-9
    assert one["test/top1_video"] == two["test/top1_video"]
    assert one["test/top5_video"] == two["test/top5_video"]


def test_precise_bn_pools_both_ranks(runs: dict) -> None:
    """2 ranks x 2 batches of 8 clips give the statistics of 1 process x 2 batches of 16
    (the same 32 clips): the test then scores every video as the 1-process run does."""
    assert runs["one"]["precise_bn_batches_used"] == runs["two"]["precise_bn_batches_used"] == 2
    va = pd.read_csv(runs["one_dir"] / "test_videos.csv")
    vb = pd.read_csv(runs["two_dir"] / "test_videos.csv")
    assert float((va["p_label"] - vb["p_label"]).abs().max()) <= 1e-9


def test_killed_two_process_run_resumes_to_the_same_result(runs: dict) -> None:
    run = runs["tmp"] / "killed"
    sets = [*runs["common"], *TWO]
    # Its own session: the kill takes both ranks down, as a lost node would.
    proc = subprocess.Popen(cli(run, sets), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "done").exists()
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    assert killed_at < EPOCHS - 1, f"the checkpoint on disk was epoch {killed_at}"

    resumed, straight = train(run, sets), runs["two"]
    assert resumed["resumed"] and not straight["resumed"] and resumed["world_size"] == 2
    assert resumed["steps"] == straight["steps"] == STEPS
    for key in ("test/top1_video", "test/top5_video", "val/top1_clip", "val/loss",
                "train/loss"):
        assert resumed["metrics"][key] == pytest.approx(straight["metrics"][key], abs=1e-9), key
    la, lb = losses(run), losses(runs["two_dir"])
    assert len(la) == STEPS and float((la - lb).abs().max()) <= LOSS_TOL
