"""Real sweeps (subprocesses) under faults: stopped or killed, and two at once on one tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from helpers.tiny import sweep_cmd, write_grid, write_root

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_dirs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("proxy/t/*/config.yaml"))


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def tiny_root(tmp_path, test_videos) -> Path:
    return write_root(tmp_path / "data", test_videos)


# SIGINT and SIGHUP take SIGTERM's path (one handler): slow-marked, run by `make test`.
@pytest.mark.parametrize("sig", [
    signal.SIGTERM, signal.SIGKILL,
    pytest.param(signal.SIGINT, marks=pytest.mark.slow),
    pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
], ids=lambda s: s.name)
def test_a_stopped_sweep_leaves_no_worker_and_the_rerun_does_the_rest(tmp_path, tiny_root, sig):
    # r0 finishes first; r1 and r2 are still training when the sweep is stopped.
    grid = write_grid(tmp_path / "grid.yaml", [1, 6, 6])
    results = tmp_path / "results"
    sweep = subprocess.Popen(sweep_cmd(grid, results, tiny_root, 2), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        parent = psutil.Process(sweep.pid)
        wait_for(lambda: any((d / "done").exists() for d in run_dirs(results))
                 or sweep.poll() is not None, 300, "the first run to finish")
        assert sweep.poll() is None, sweep.stderr.read().decode()[-3000:]
        workers = parent.children(recursive=True)
        assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
        assert sum((d / "done").exists() for d in run_dirs(results)) == 1

        sweep.send_signal(sig)
        code = sweep.wait(timeout=60)
        if sig != signal.SIGKILL:
            assert code == 128 + sig
            assert f"stopped by {sig.name}" in sweep.stderr.read().decode()
        wait_for(lambda: not alive(workers), 30, "the workers to exit")
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        for p in alive(workers):  # survivors of a failed check: not left to block forever
            p.kill()
        sweep.stderr.close()

    # A run in its last seconds may finish within the workers' grace period: what is done
    # now is whole, and the rest is what the rerun must do.
    done_at_stop = {d: (d / "summary.json").stat().st_mtime_ns
                    for d in run_dirs(results) if (d / "done").exists()}
    assert 1 <= len(done_at_stop) < 3
    for d in done_at_stop:
        assert json.loads((d / "summary.json").read_text())["epochs"] == _epochs(d)
    subprocess.run(sweep_cmd(grid, results, tiny_root, 2), env=ENV, check=True,
                   capture_output=True, timeout=600)
    for d in run_dirs(results):
        summary = json.loads((d / "summary.json").read_text())
        if d in done_at_stop:  # not trained again
            assert (d / "summary.json").stat().st_mtime_ns == done_at_stop[d]
        else:
            assert summary["epochs"] == _epochs(d) == 6 and (d / "done").exists()


def _epochs(run: Path) -> int:
    return yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"]


def _history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv")


def _metrics(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["metrics"]


def test_two_sweeps_at_once_train_every_run_once(tmp_path, tiny_root):
    grid = write_grid(tmp_path / "grid.yaml", [3, 3])
    lone, shared = tmp_path / "lone", tmp_path / "shared"
    subprocess.run(sweep_cmd(grid, lone, tiny_root, 1), env=ENV, check=True,
                   capture_output=True, timeout=600)
    both = [subprocess.Popen(sweep_cmd(grid, shared, tiny_root, 1), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs[0][1].decode()[-3000:]
    waited = sum(b"is being trained by process" in err for _, err in outputs)
    assert waited >= 1  # the second sweep found a run locked and waited for it

    assert [d.name for d in run_dirs(shared)] == [d.name for d in run_dirs(lone)]
    for a, b in zip(run_dirs(lone), run_dirs(shared)):
        assert (b / "done").exists()
        pd.testing.assert_frame_equal(_history(a), _history(b), rtol=1e-5)
        want, got = _metrics(a), _metrics(b)
        assert set(want) == set(got)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
        assert json.loads((b / "summary.json").read_text())["resumed"] is False
