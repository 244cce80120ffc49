"""Trivial submitit callables for the cluster tests (pickled by value: the job's
Python need not import the tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import submitit


class Square(submitit.helpers.Checkpointable):
    """x -> x², except for the one input it refuses."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse

    def __call__(self, x: int) -> int:
        if x == self.refuse:
            raise ValueError(f"refusing input {x}")
        return x * x


class Patient(submitit.helpers.Checkpointable):
    """Announces itself in ``marker``, then waits for the file ``release`` (or ``max_s``).

    Returns how often SLURM restarted it, so a requeue is visible in the result.
    """

    def __init__(self, release: str, max_s: float = 120.0) -> None:
        self.release, self.max_s = release, max_s

    def __call__(self, marker: str) -> dict:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        tmp = Path(f"{marker}.tmp")  # written whole, then renamed: readers never see half
        tmp.write_text(f"{os.environ.get('SLURM_JOB_ID')} {restarts}\n")
        os.replace(tmp, marker)
        deadline = time.time() + self.max_s
        while not Path(self.release).exists() and time.time() < deadline:
            time.sleep(0.1)
        return {"restarts": restarts, "released": Path(self.release).exists()}

    def checkpoint(self, marker: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(Patient(self.release, self.max_s), marker)
