"""Errors a user can fix: each message names the key, the bad value and what is allowed.

``one_line`` sorts any exception into a user error (a bad value or file, a full or read-only
disk), with the one line that says how to fix it, or a bug (None: keep the traceback).  The
CLI prints that line and exits with 2; ``--debug`` keeps the traceback.
"""

from __future__ import annotations

import errno
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad key or value; the message names it and the valid choices."""


# errno -> what the user can do about it.
DISK_ERRORS = {
    errno.ENOSPC: "free some space or choose another folder (--results, output_dir, data.root)",
    errno.EDQUOT: "free some space or choose another folder (--results, output_dir, data.root)",
    errno.EACCES: "choose a writable folder (--results, output_dir, data.root)",
    errno.EPERM: "choose a writable folder (--results, output_dir, data.root)",
    errno.EROFS: "choose a folder on a writable file system (--results, output_dir, data.root)",
}


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: a tag that would construct an object, or where parsing broke."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    if isinstance(err, yaml.constructor.ConstructorError):
        return f"{problem}; only plain YAML data is allowed (no !!python or other object tags)"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML: {problem}{where}"


def one_line(exc: BaseException) -> str | None:
    """The message for a user error, or None for anything else (a bug: keep the traceback)."""
    if isinstance(exc, ConfigError):  # also data.annotations.AnnotationError
        return _first_line(str(exc))
    if isinstance(exc, yaml.YAMLError):
        return yaml_problem(exc)
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        what = f"cannot write {exc.filename}" if exc.filename else "a write failed"
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return (f"{what}: {exc.strerror or name} ({name}); "
                f"{DISK_ERRORS[exc.errno]}")
    return None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else "error"


def report(exc: BaseException, command: str, stream: Any) -> bool:
    """Print the user error's line to ``stream``; False when ``exc`` is not a user error."""
    line = one_line(exc)
    if line is None:
        return False
    print(f"nlrepro {command}: error: {line}", file=stream)
    return True
