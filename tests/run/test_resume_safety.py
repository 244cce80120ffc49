"""Resume reads checkpoints as weights only, whatever the environment says, and passes over a
broken ``last.ckpt`` for the newest readable epoch checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers.tiny import tiny_sets, write_root

from nlrepro.config import ConfigError, load_config
from nlrepro.run.train import train, train_run_dir


class WritesAFile:
    """Unpickling this calls ``open(path, "w")``: code run by loading a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, test_videos) -> tuple[Path, dict]:
    """One real finished 1-epoch run: its folder and summary."""
    tmp = tmp_path_factory.mktemp("resume")
    root = write_root(tmp / "data", test_videos)
    run = tmp / "run"
    return run, train(load_config("proxy", sets=tiny_sets(root)), run)


def unfinished_copy(trained: tuple[Path, dict], dest: Path) -> Path:
    """The trained run as if killed after its last checkpoint: no done, summary or CSV."""
    shutil.copytree(trained[0], dest)
    for name in ("done", "summary.json", "metrics.csv"):
        (dest / name).unlink()
    assert sorted(p.name for p in (dest / "checkpoints").iterdir()) == ["epoch000.ckpt",
                                                                       "last.ckpt"]
    return dest


def test_a_crafted_last_ckpt_never_runs_its_code(trained, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run = unfinished_copy(trained, tmp_path / "run")
    marker = tmp_path / "code-ran"
    good = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    torch.save({**good, "payload": WritesAFile(marker)}, run / "checkpoints" / "last.ckpt")

    with caplog.at_level(logging.WARNING, logger="nlrepro.resume"):
        summary = train_run_dir(run)

    assert not marker.exists()
    assert "last.ckpt (UnpicklingError" in caplog.text
    assert f"resuming from {run / 'checkpoints' / 'epoch000.ckpt'} (epoch 0)" in caplog.text
    assert (run / "done").is_file()
    assert summary["metrics"]["test/top1_video"] == trained[1]["metrics"]["test/top1_video"]


def test_a_crafted_checkpoint_without_fallback_is_refused(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run = unfinished_copy(trained, tmp_path / "run")
    marker = tmp_path / "code-ran"
    (run / "checkpoints" / "epoch000.ckpt").unlink()
    torch.save({"epoch": 0, "state_dict": {}, "payload": WritesAFile(marker)},
               run / "checkpoints" / "last.ckpt")

    with pytest.raises(ConfigError) as err:
        train_run_dir(run)
    assert not marker.exists()
    assert "no checkpoint loads as weights only" in str(err.value)
    assert f"delete {run / 'checkpoints'} to train this run from the start" in str(err.value)
    assert not (run / "done").exists()


def test_a_truncated_last_ckpt_falls_back_to_the_epoch_checkpoint(trained, tmp_path, caplog):
    run = unfinished_copy(trained, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    with caplog.at_level(logging.WARNING, logger="nlrepro.resume"):
        summary = train_run_dir(run)

    assert "resuming from" in caplog.text and "epoch000.ckpt (epoch 0)" in caplog.text
    assert summary["resumed"] is True
    assert summary["metrics"]["test/top1_video"] == trained[1]["metrics"]["test/top1_video"]
    saved = json.loads((run / "summary.json").read_text())
    assert saved["metrics"]["test/top5_video"] == trained[1]["metrics"]["test/top5_video"]


def test_no_readable_checkpoint_names_what_to_delete(trained, tmp_path):
    run = unfinished_copy(trained, tmp_path / "run")
    for path in (run / "checkpoints").iterdir():
        path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ConfigError, match="delete .*checkpoints to train this run"):
        train_run_dir(run)
