"""One real Lightning run on the proxy profile: summary, done marker, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from nlrepro.config import load_config
from nlrepro.run.train import train

TINY = ["data.proxy.num_train=48", "data.proxy.num_val=16", "data.proxy.num_test=16",
        "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
        "data.batch_size=16", "trainer.log_every_n_steps=1", "trainer.deterministic=true",
        "data.num_workers=0", "trainer.threads=1"]


def tiny_sets(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.root={tmp_path / 'proxy'}", *extra]


@pytest.mark.slow
def test_train_writes_summary_and_skips_when_done(tmp_path):
    cfg = load_config("proxy", sets=tiny_sets(tmp_path, "trainer.max_epochs=2",
                                               "model.nonlocal.blocks=1"))
    summary = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "done").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((run / "summary.json").read_text())
    assert saved["epochs"] == 2 and saved["steps"] == 2 * 3
    for key in ("test/top1_video", "test/top5_video", "val/top1_clip"):
        assert 0.0 <= saved["metrics"][key] <= 100.0
    assert saved["metrics"]["test/videos"] == 16 and saved["metrics"]["test/videos_failed"] == 0
    assert {"torch", "lightning", "decord"} <= set(saved["versions"])
    assert saved["throughput_clips_per_s"] > 0 and saved["peak_rss_mb"] > 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert sorted(metrics.dropna(subset=["val/loss"])["epoch"].unique()) == [0, 1]
    stamp = (run / "summary.json").stat().st_mtime_ns
    assert train(cfg, run) == summary
    assert (run / "summary.json").stat().st_mtime_ns == stamp


def _cli(run_dir: Path, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "nlrepro", "train", "--profile", "proxy", "--run-dir",
           str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    sets = tiny_sets(tmp_path, "trainer.max_epochs=5", "model.nonlocal.blocks=1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_cli(tmp_path / "straight", sets), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run, sets), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "done").exists()
    # Killed in the middle of training: the checkpoint it left is an early epoch's (a
    # checkpoint written only when training ends would make this a test of nothing).
    import torch
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    assert killed_at < 4, f"the first checkpoint on disk was epoch {killed_at}, not an early one"
    subprocess.run(_cli(run, sets), check=True, env=env, capture_output=True)

    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert b["resumed"] and not a["resumed"]
    assert a["epochs"] == b["epochs"] == 5 and a["steps"] == b["steps"]
    for key in ("test/top1_video", "test/top5_video", "val/top1_clip", "val/loss"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], abs=1e-6), key
    ha = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    hb = pd.read_csv(run / "metrics.csv")
    va = ha.dropna(subset=["val/loss"])["val/loss"].to_numpy()
    vb = hb.dropna(subset=["val/loss"])["val/loss"].to_numpy()
    assert len(va) == len(vb) == 5
    assert va == pytest.approx(vb, abs=1e-6)
