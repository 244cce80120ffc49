"""Waiting on the local SLURM cluster, shared by the cluster tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def sacct_states(cluster, job_id: str) -> list[str]:
    """Every state SLURM recorded for a job, requeued attempts included (``-D``)."""
    out = cluster.run("sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State")
    return [s.split()[0] for s in out.split()]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def preempt_first_checkpointed(cluster, sweep: subprocess.Popen, table_dir: Path,
                               timeout: float) -> tuple[Path, str]:
    """USR2 to the job of the first run that has saved an epoch, as a cluster would
    preempt it; returns that run's folder and job id."""

    def first_checkpointed() -> Path | None:
        for ckpt in sorted(table_dir.glob("*/checkpoints/last.ckpt")):
            if (ckpt.parent.parent / "job.txt").is_file():
                return ckpt.parent.parent
        assert sweep.poll() is None, f"sweep ended early:\n{sweep.stdout.read()}"
        return None

    wait_for(lambda: first_checkpointed() is not None, timeout, "a first last.ckpt")
    victim = first_checkpointed()
    assert not (victim / "done").exists(), "the run finished before it could be preempted"
    job_id = (victim / "job.txt").read_text().strip()
    cluster.run("scancel", "--signal=USR2", job_id)
    return victim, job_id
