"""Which checkpoint a run resumes from, loaded as weights only whatever the environment says.

``torch.load`` unpickles arbitrary objects unless told ``weights_only=True``, and
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns that off wherever the call does not say so
explicitly.  A run folder may come from someone else (a shared results tree), so every
checkpoint a run resumes from is first read here with ``weights_only=True``, and the
Trainer is told the same.  A ``last.ckpt`` that cannot be read that way (truncated,
corrupt, or holding objects other than weights) is passed over for the newest readable
``epochNNN.ckpt``; with none, the error names the folder to delete.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from nlrepro.errors import ConfigError
from nlrepro.run.rundir import LAST

log = logging.getLogger("nlrepro.resume")

EPOCH_FILE = re.compile(r"epoch(\d+)\.ckpt")


class CheckpointError(ConfigError):
    """No checkpoint of a started run can be loaded; the message says what to delete."""


def read_weights_only(path: Path) -> tuple[dict | None, str | None]:
    """``(checkpoint, None)``, or ``(None, why)`` when it cannot be read as weights only."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: do not resume from it
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        return None, f"{type(err).__name__}: {lines[0] if lines else 'unreadable'}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        return None, "not a Lightning checkpoint (no state_dict/epoch)"
    return ckpt, None


def epoch_checkpoints(folder: Path) -> list[Path]:
    """``epochNNN.ckpt`` files, newest epoch first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("epoch*.ckpt")
             if (m := EPOCH_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` if it loads as weights only, else the
    newest epoch checkpoint that does (said in the log); None when the run never saved one.

    Raises ``CheckpointError`` when checkpoints exist and none of them can be loaded.
    """
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / LAST
    candidates = ([last] if last.exists() else []) + epoch_checkpoints(ckpt_dir)
    if not candidates:
        return None
    problems = []
    for path in candidates:
        ckpt, why = read_weights_only(path)
        if ckpt is not None:
            if problems:
                log.warning("cannot resume from %s; resuming from %s (epoch %d) instead",
                            "; ".join(problems), path, ckpt["epoch"])
            return path
        problems.append(f"{path} ({why})")
    raise CheckpointError(f"cannot resume: no checkpoint loads as weights only: "
                          f"{'; '.join(problems)}; delete {ckpt_dir} to train this run "
                          f"from the start")
