"""Capture a trained non-local block's affinity on one clip (Figure 3's raw material).

For one clip, the chosen block's input x is captured with a forward hook and
``block.affinity(x)`` gives the normalised f(x_i, x_j)/C(x) of Eq. 1 (a softmax row for the
(embedded) Gaussian, f/M for dot product and concatenation; zero outside the block's scope).
Queries x_i live on the block's (t, h, w) grid; keys x_j on the key grid, which is max-pooled
(1, 2, 2) when the block subsamples.  The model comes from a run's checkpoint and the clip is
decoded with the run's own test sampling and centre crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nlrepro.config import ConfigError
from nlrepro.data.datamodule import VideoDataModule
from nlrepro.data.transforms import EvalTransform
from nlrepro.data.video import open_video, read_frames, test_indices
from nlrepro.models.non_local import NonLocalBlock
from nlrepro.proxy.dataset import ensure_proxy_data
from nlrepro.proxy.truth import Region
from nlrepro.run import rundir
from nlrepro.run.module import VideoClassifier


# ---- geometry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """A feature grid ``shape = (T, H, W)`` and the size of one cell in clip units
    ``cell = (frames, pixels_y, pixels_x)``; positions are flattened in (t, h, w) order."""

    shape: tuple[int, int, int]
    cell: tuple[float, float, float]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def unravel(self, index: int) -> tuple[int, int, int]:
        t, rest = divmod(int(index), self.shape[1] * self.shape[2])
        return (t, *divmod(rest, self.shape[2]))

    def ravel(self, t: int, h: int, w: int) -> int:
        return (t * self.shape[1] + h) * self.shape[2] + w

    def centre(self, index: int) -> tuple[float, float, float]:
        """(frame, y, x) of the cell's centre in clip coordinates (pixel centres at .0)."""
        t, h, w = self.unravel(index)
        ft, fy, fx = self.cell
        return (t + 0.5) * ft - 0.5, (h + 0.5) * fy - 0.5, (w + 0.5) * fx - 0.5

    def region_mask(self, regions: Sequence[tuple[float, float, float, float, float, float]]
                    ) -> torch.Tensor:
        """``(size,)`` bool: cells that overlap any region ``(t0, t1, y0, y1, x0, x1)``.

        Regions are half-open boxes in clip units: frames ``[t0, t1)``, pixels ``[y0, y1)``,
        ``[x0, x1)``; a cell covers frames ``[t·ft, (t+1)·ft)`` and so on.
        """
        T, H, W = self.shape
        ft, fy, fx = self.cell
        mask = torch.zeros(T, H, W, dtype=torch.bool)
        for t0, t1, y0, y1, x0, x1 in regions:
            ts = [t for t in range(T) if t * ft < t1 and (t + 1) * ft > t0]
            hs = [h for h in range(H) if h * fy < y1 and (h + 1) * fy > y0]
            ws = [w for w in range(W) if w * fx < x1 and (w + 1) * fx > x0]
            for t in ts:
                for h in hs:
                    mask[t, h, ws] = True
        return mask.flatten()


@dataclass
class AttentionMap:
    """One clip's affinity: ``weights[i, j]`` = f(x_i, x_j)/C(x) for query i, key j;
    ``reachable[i, j]``: key j is inside query i's scope (space/time/temporal group)."""

    weights: torch.Tensor  # (N, M) float
    reachable: torch.Tensor  # (N, M) bool
    query: Grid
    key: Grid
    block: str
    logits: torch.Tensor | None = None  # (num_classes,) the model's output for the clip


def grids_for(block: nn.Module, x_shape: Sequence[int], clip_shape: Sequence[int]
              ) -> tuple[Grid, Grid]:
    """Query and key grids of ``block`` for input ``x_shape = (B,C,T,H,W)`` of a clip
    ``(B,3,F,S_h,S_w)``: keys are max-pooled (1,2,2) (floor) when the block subsamples."""
    _, _, T, H, W = x_shape
    F_, Sh, Sw = clip_shape[2:]
    cell = (F_ / T, Sh / H, Sw / W)
    query = Grid((T, H, W), cell)
    if block.pools(H, W):
        key = Grid((T, H // 2, W // 2), (cell[0], 2 * cell[1], 2 * cell[2]))
    else:
        key = Grid((T, H, W), cell)
    return query, key


# ---- capture ----------------------------------------------------------------------------
def nonlocal_blocks(model: nn.Module) -> dict[str, nn.Module]:
    net = getattr(model, "model", model)
    blocks = net.nonlocal_blocks() if hasattr(net, "nonlocal_blocks") else {}
    if not blocks:
        raise ConfigError("this model has no non-local block: nothing to visualise "
                         "(train one with model.nonlocal.blocks >= 1)")
    return blocks


def pick_block(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """``name`` (e.g. ``res3.1``) or, when None, the first block; errors list the valid ones."""
    blocks = nonlocal_blocks(model)
    if name is None:
        name = next(iter(blocks))
    if name not in blocks:
        raise ConfigError(f"--block {name!r} is not a non-local block of this model; "
                         f"valid: {', '.join(blocks)}")
    return name, blocks[name]


@torch.no_grad()
def capture(model: nn.Module, clip: torch.Tensor, block_name: str | None = None
            ) -> AttentionMap:
    """Run ``clip (1,3,F,H,W)`` through ``model`` (eval) and return the block's affinity."""
    return next(iter(capture_blocks(model, clip, [block_name]).values()))


@torch.no_grad()
def capture_blocks(model: nn.Module, clip: torch.Tensor, block_names: Sequence[str | None]
                   ) -> dict[str, AttentionMap]:
    """``capture`` for several blocks from one forward pass: ``{block: affinity}`` in the
    order given (``None`` is the first block)."""
    blocks = dict(pick_block(model, name) for name in block_names)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
    handles = [block.register_forward_pre_hook(
                   lambda _m, args, into=seen[name]: into.append(args[0].detach()))
               for name, block in blocks.items()]
    try:
        model.eval()
        logits = model(clip)
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name, block in blocks.items():
        if len(seen[name]) != 1:
            raise RuntimeError(f"block {name} ran {len(seen[name])} times for one clip")
        x = seen[name][0].float().contiguous()
        weights = block.affinity(x)[0].float()
        query, key = grids_for(block, x.shape, clip.shape)
        if tuple(weights.shape) != (query.size, key.size):
            raise RuntimeError(f"block {name}: affinity {tuple(weights.shape)} does not match "
                               f"the grids {query.shape} x {key.shape}")
        out[name] = AttentionMap(weights, scope_support(block, x), query, key, name,
                                 logits[0].detach().float())
    return out


def scope_support(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` bool: the keys each query may see under ``block``'s scope.

    A Gaussian twin with the same scope, subsampling and temporal groups, fed zeros, gives a
    uniform softmax over exactly those keys; real affinities cannot tell (a dot product or a
    ReLU can be 0 inside the scope).
    """
    twin = NonLocalBlock(x.shape[1], "gaussian", scope=block.scope, subsample=block.subsample,
                         norm="none", temporal_group=block.temporal_group)
    return twin.affinity(torch.zeros_like(x[:1]))[0] > 0



# ---- model and clip -----------------------------------------------------------------------
def checkpoint_path(ckpt: Path) -> Path:
    """A ``.ckpt`` file, or a run folder (its ``checkpoints/last.ckpt``)."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        ckpt = rundir.last_checkpoint(ckpt)
    if not ckpt.is_file():
        raise ConfigError(f"no checkpoint at {ckpt}: give a .ckpt file, a run folder "
                                "holding checkpoints/last.ckpt, or 'auto'")
    return ckpt


def load_classifier(ckpt: Path) -> Any:
    """The trained ``VideoClassifier`` (eval mode) from a Lightning checkpoint.

    Loaded with ``weights_only=True``: the config is plain data in ``hyper_parameters``.
    """
    state = torch.load(checkpoint_path(ckpt), map_location="cpu", weights_only=True)
    # No ImageNet weights: the checkpoint overwrites them (and nothing is downloaded).
    model = VideoClassifier(state["hyper_parameters"]["config"], load_pretrained=False)
    weights = {k.replace("model._orig_mod.", "model.", 1): v  # saved from torch.compile
               for k, v in state["state_dict"].items()}
    model.load_state_dict(weights)
    return model.eval()


@dataclass
class Clip:
    """The centre test clip of a video as the model sees it (centre crop at test scale)."""

    path: Path
    tensor: torch.Tensor  # (1, 3, F, S, S) normalised
    frames: torch.Tensor  # (F, S, S, 3) uint8, the same pixels for display
    indices: list[int]  # source frame of each clip frame
    scale: float  # source pixel -> clip pixel
    offset: tuple[int, int]  # (top, left) of the crop in the resized frame


def listed_test_videos(cfg: Any) -> list[Path]:
    """The run's test list (the proxy dataset is generated first if it is missing)."""
    if cfg.data.proxy is not None:
        ensure_proxy_data(cfg)
    dm = VideoDataModule(cfg)
    dm.setup("test")
    return [Path(r.path) for r in dm.datasets["test"].records]


def video_path(cfg: Any, video: str) -> Path:
    """``video``: a file, or an index into the run's test list."""
    if not video.lstrip("-").isdigit():
        path = Path(video)
        if not path.is_file():
            raise ConfigError(f"--video {video!r}: no such file (give a video file or an "
                                    "index into the test list)")
        return path
    paths = listed_test_videos(cfg)
    index = int(video)
    if not 0 <= index < len(paths):
        raise ConfigError(f"--video {index}: the test list ({cfg.data.root}/"
                         f"{cfg.data.test_list}) holds videos 0..{len(paths) - 1}")
    return paths[index]


def load_clip(cfg: Any, path: Path) -> Clip:
    """Decode the centre clip with the run's test sampling and centre crop (real decord)."""
    d = cfg.data
    reader = open_video(path)
    indices = test_indices(len(reader), d.frames, d.stride, 1)[0]
    raw = read_frames(reader, indices, path)
    transform = EvalTransform(d.test_scale, d.test_crop, 1, d.mean, d.std)
    resized = transform.resize(raw)
    top, left = transform.offsets(resized.shape[-2], resized.shape[-1], 0)
    tensor = transform.crop(resized, 0)
    shown = resized[..., top:top + d.test_crop, left:left + d.test_crop]
    frames = shown.as_subclass(torch.Tensor).permute(0, 2, 3, 1).contiguous()
    scale = resized.shape[-2] / raw.shape[1]
    return Clip(Path(path), tensor[None], frames, [int(i) for i in indices], scale, (top, left))


def to_clip_regions(clip: Clip, regions: Sequence[Region]) -> list[Region]:
    """Regions in source-video units (frames ``[t0, t1)``, pixels) -> the clip's units.

    Frames map through the clip's sampled indices (a region becomes one box per clip frame
    that shows it), pixels through the test resize and crop; boxes are clipped to the crop.
    """
    top, left = clip.offset
    size_y, size_x = clip.frames.shape[1:3]
    out = []
    for t0, t1, y0, y1, x0, x1 in regions:
        ys = (max(0.0, y0 * clip.scale - top), min(float(size_y), y1 * clip.scale - top))
        xs = (max(0.0, x0 * clip.scale - left), min(float(size_x), x1 * clip.scale - left))
        if ys[0] >= ys[1] or xs[0] >= xs[1]:
            continue
        for f, source in enumerate(clip.indices):
            if t0 <= source < t1:
                out.append((f, f + 1, *ys, *xs))
    return out
