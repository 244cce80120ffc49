"""Start-up removes the temporaries of dead writers, and only those."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nlrepro.config import load_config
from nlrepro.proxy.dataset import ensure_proxy_data
from nlrepro.utils import _HOST, remove_dead, tmp_prefix

PROXY = ["data.proxy.num_train=8", "data.proxy.num_val=4", "data.proxy.num_test=4"]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_killed_generation_is_removed_at_the_next_start(tmp_path, caplog):
    root = tmp_path / "proxy"
    writer = subprocess.Popen([sys.executable, "-m", "nlrepro", "make-proxy-data", str(root),
                               "--num-train", "4000", "--workers", "1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".proxy.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let it write a few videos
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (half,) = tmp_path.glob(".proxy.tmp-*")
    assert any(half.rglob("*.mp4")) and not root.exists()
    live = tmp_path / f"{tmp_prefix('proxy')}mine"  # this process is alive
    other_host = tmp_path / f".proxy.tmp-otherhost-{writer.pid}-x"  # a pid of another machine
    live.mkdir()
    other_host.mkdir()

    ensure_proxy_data(load_config("proxy", sets=[f"data.root={root}", *PROXY]))

    assert not half.exists()
    assert live.is_dir() and other_host.is_dir()
    assert (root / "train.csv").is_file()
    assert f"removed {half}, left by process {writer.pid}, which is gone" in caplog.text


def test_only_temporaries_of_dead_writers_on_this_host_go(tmp_path):
    dead = dead_pid()
    names = {
        f".last.ckpt.tmp-{_HOST}-{dead}-ckpt": False,            # dead writer: removed
        f".summary.json.tmp-{_HOST}-{os.getpid()}-abc": True,    # this process: kept
        f".summary.json.tmp-elsewhere-{dead}-abc": True,         # another host: kept
        ".last.ckpt.tmp": True,                                  # not ours to judge
        "last.ckpt": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_dead(tmp_path)
    assert [p.name for p in removed] == [n for n, keep in names.items() if not keep]
    assert {p.name for p in tmp_path.iterdir()} == {n for n, keep in names.items() if keep}


def test_atomic_writes_name_their_temporaries_after_the_writer(tmp_path, monkeypatch):
    """So a write killed before its rename leaves a name that start-up can judge."""
    from nlrepro import utils
    from nlrepro.utils import TMP_NAME

    seen, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(Path(src).name),
                                                         real(src, dst)))
    utils.atomic_write_text(tmp_path / "summary.json", "{}")
    (match,) = [TMP_NAME.match(name) for name in seen]
    assert match["name"] == "summary.json" and int(match["pid"]) == os.getpid()
