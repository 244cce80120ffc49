"""A PyAV video reader with the part of decord's ``VideoReader`` interface nlrepro uses.

decord ships wheels only for x86-64 Linux and Windows; PyAV (FFmpeg's libraries, wheels for
every platform) decodes the same H.264 streams into the same frames.  Frame ``i`` is the
``i``-th frame in presentation order, as in decord: at open, the stream's packets are demuxed
(no decoding) and their timestamps sorted; a batch seeks to the keyframe before its first
frame and decodes forward to its last.  Frames are converted to RGB24 by FFmpeg's swscale,
as decord converts them (``tests/tools/test_pyav_decoder.py`` compares the two exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class FrameBatch:
    """decord's NDArray stand-in: ``asnumpy()`` gives ``uint8 (T, H, W, 3)``."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = frames

    def asnumpy(self) -> np.ndarray:
        return self._frames


class PyAVReader:
    """``len(reader)`` frames; ``reader.get_batch(indices).asnumpy()`` in the order asked."""

    def __init__(self, path: Path | str) -> None:
        import av

        self.path = str(path)
        self._container: Any = av.open(self.path)
        try:
            if not self._container.streams.video:
                raise ValueError("no video stream")
            self._stream = self._container.streams.video[0]
            self._pts = sorted(p.pts for p in self._container.demux(self._stream)
                               if p.pts is not None and p.size > 0)
        except BaseException:
            self._container.close()
            raise

    def __len__(self) -> int:
        return len(self._pts)

    def get_batch(self, indices: Sequence[int]) -> FrameBatch:
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            raise IndexError("no frame indices given")
        if wanted[0] < 0 or wanted[-1] >= len(self._pts):
            raise IndexError(f"frame indices {wanted[0]}..{wanted[-1]} outside "
                             f"0..{len(self._pts) - 1}")
        targets = {self._pts[i]: i for i in wanted}
        last = self._pts[wanted[-1]]
        self._container.seek(self._pts[wanted[0]], stream=self._stream, backward=True,
                             any_frame=False)
        frames: dict[int, np.ndarray] = {}
        for frame in self._container.decode(self._stream):
            if frame.pts in targets:
                frames[targets[frame.pts]] = frame.to_ndarray(format="rgb24")
            if frame.pts is not None and frame.pts >= last and len(frames) == len(targets):
                break
        lost = [i for i in wanted if i not in frames]
        if lost:
            raise RuntimeError(f"frames {lost[:5]} could not be decoded")
        return FrameBatch(np.stack([frames[int(i)] for i in indices]))

    def close(self) -> None:
        self._container.close()

    def __del__(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
