"""Temporaries named after their writer, and the start-up sweep that removes dead writers' ones.

Every temporary file or folder nlrepro writes before renaming it into place is called
``.<name>.tmp-<host>-<pid>-<anything>``.  A writer killed mid-write (a proxy generation is
24-29 MB a try) leaves it behind; ``remove_dead`` deletes those whose writer is gone: same
host, and no process with that pid.  A temporary of a live process, or of another host
sharing the folder, is never touched (a pid says nothing about another machine).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path

log = logging.getLogger("nlrepro.leftovers")

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
TMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-")


def tmp_prefix(name: str) -> str:
    """The prefix of a temporary that stands for ``name`` and is written by this process."""
    return f".{name}.tmp-{_HOST}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (one we may not signal counts as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (of ``name`` only, if given) whose writer is dead;
    returns what was removed and logs it."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        m = TMP_NAME.match(path.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        if m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
        log.warning("removed %s, left by process %s, which is gone", path, m["pid"])
    return removed
