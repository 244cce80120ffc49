"""Small shared helpers: atomic writes, library versions, git commit."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from nlrepro.leftovers import tmp_prefix

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path.name))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; keep what open() would give
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
