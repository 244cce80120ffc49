"""Local worker processes that live and die with the sweep that started them.

The workers of ``launch_local`` are spawned children, so a signal the sweep receives alone
(``kill PID``, a closed terminal, a SIGINT sent to its pid) used to leave them running:
re-parented to PID 1 they finished their queued runs, then blocked on a pipe forever, and
a rerun trained the same folders beside them.  Now:

- SIGTERM, SIGINT and SIGHUP in the sweep stop every worker (SIGTERM, then SIGKILL after a
  grace period) before the sweep exits with 128 + the signal number;
- a worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, Linux),
  which also covers a SIGKILLed sweep; elsewhere a thread polls the parent pid.

A killed worker loses at most the epoch in flight: its run resumes from ``last.ckpt`` on the
next sweep, and its run lock is released by the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
GRACE_S = 10.0


class Stopped(BaseException):
    """A stop signal reached the sweep (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit when ``parent_pid`` is gone, however it ended."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # it died before prctl took effect
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """In the body, SIGTERM/SIGINT/SIGHUP raise ``Stopped`` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_stopped) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def stop_workers(processes: dict[int, Any], grace_s: float = GRACE_S) -> None:
    """SIGTERM every live worker, SIGKILL those still alive after ``grace_s``, reap all."""
    procs = [p for p in processes.values() if p.is_alive()]
    for p in procs:
        p.terminate()
    deadline = time.time() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.time()))
        if p.is_alive():
            p.kill()
            p.join()
