"""Small shared helpers: atomic writes, temporaries of dead writers, logging set-up, library
versions, git commit."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary file beside ``path`` to write (or link) into; renamed over ``path``
    when the block ends, removed when it raises.  The one atomic-write mechanism of nlrepro:
    text, JSON, figures, checkpoints and linked files all go through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path.name))
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; keep what open() would give
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: Path, **savefig: Any) -> Path:
    """Save a matplotlib figure atomically, in the format of ``path``'s suffix."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), **savefig)
    plt.close(fig)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (recorded in every summary)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "lightning", "torchmetrics", "decord", "av",
                 "numpy", "pandas", "submitit", "nlrepro"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the repository the code runs from (None outside git)."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def inside(root: Path, path: str | Path) -> Path:
    """Resolve ``path`` against ``root`` and refuse to leave it (user files are data)."""
    root = Path(root).resolve()
    full = (root / path).resolve()
    if full != root and root not in full.parents:
        raise ValueError(f"path {str(path)!r} escapes its root {str(root)!r}")
    return full


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is now, not as it was at set-up: ``nlrepro.cli.main``
    runs many times in one process (tests, notebooks), each with its own stderr."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging() -> None:
    """nlrepro's own log lines on stderr; Lightning keeps its own handler."""
    logger = logging.getLogger("nlrepro")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    # The run folder holds config.yaml next to metrics.csv; resume keeps the history itself.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


# ---- temporaries ----------------------------------------------------------------------
# Every temporary file or folder nlrepro writes before renaming it into place is called
# ``.<name>.tmp-<host>-<pid>-<anything>``.  A writer killed mid-write (a proxy generation is
# 24-29 MB a try) leaves it behind; ``remove_dead`` deletes those whose writer is gone: same
# host, and no process with that pid.  A temporary of a live process, or of another host
# sharing the folder, is never touched (a pid says nothing about another machine).
log = logging.getLogger("nlrepro.utils")

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
