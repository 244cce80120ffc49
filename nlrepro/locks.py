"""One trainer per run folder: an exclusive OS lock held for the run's whole life.

``flock`` on ``<run>/lock``: the kernel releases it when the holder exits, however it
exits (SIGKILL, OOM, node reboot of a local disk), so a stale lock never needs cleaning.
A second trainer of the same run *waits* for the first, then finds the run done and
returns its summary (or resumes it, if the first died): two sweeps started on one results
tree train every run once.  Only one process of a multi-process run takes the lock (global
rank 0); the others are started by it and would otherwise wait for it forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

log = logging.getLogger("nlrepro.locks")

LOCK_FILE = "lock"
RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_rank_zero() -> bool:
    """True unless the environment says this is a non-zero rank of a multi-process run."""
    return all(os.environ.get(var, "0") == "0" for var in RANK_VARS)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid else "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the body; wait (and say so) while another process has it."""
    if not is_rank_zero():
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("run %s is being trained by %s; waiting for it to finish",
                        run_dir, _holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
