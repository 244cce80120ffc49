"""Checkpoints written atomically: a kill mid-save never leaves a broken ``last.ckpt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nlrepro.utils import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a hidden temporary file in the same folder, then rename over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH,
                        storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
