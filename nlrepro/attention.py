"""``nlrepro attention``: the paper's Figure 3 — where a trained non-local block looks.

For one clip, the chosen block's input x is captured with a forward hook and
``block.affinity(x)`` gives the normalised f(x_i, x_j)/C(x) of Eq. 1 (a softmax row for the
(embedded) Gaussian, f/M for dot product and concatenation; zero outside the block's scope).
Queries x_i live on the block's (t, h, w) grid; keys x_j on the key grid, which is max-pooled
(1, 2, 2) when the block subsamples.  The figure shows four frames spanning the clip, each
standing for a window of time steps, arrows from the query to its ``--top`` heaviest keys
(alpha and width by weight), and below them the query's affinity over every key, summed per
window and upsampled onto the frame.

``cue_mass_ratio`` measures what the proxy task is built on: queries on one event (the probe,
late; or the cue, early) should put far more affinity on the other event's frames than a
uniform affinity over the keys they can reach would.  The task is symmetric, so a block may
bring the cue to the probe or the probe to the cue; both directions are measured (trained
5-block models look from the cue to the probe, docs/PROXY.md).  For a proxy clip the generator
is re-run to know where cue and probes are; ``--query auto`` then picks a query of the
direction the block uses more, and the ratios (on the drawn clip and averaged over
``--ratio-videos`` test clips) are printed in the JSON report, which is also saved next to the
figure (``figure3.png`` -> ``figure3.json``).

``CKPT = auto`` is ``make figure3``: Table 2c's 5-block R50 run of ``--profile`` (the model the
paper's Figure 3 comes from) through the sweep machinery (the same run folder as
``make table2c``; reused when done, trained here on the proxy when missing).
``--block strongest`` draws the block whose lookup between the proxy's two events is the
largest multiple of uniform on the test clips; the report lists every block's ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from nlrepro.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# The paper's Figure 3 shows "a non-local block in res3 computed by a 5-block non-local model":
# Table 2c's 5-block R50 row (embedded Gaussian; on the proxy every res3 and res4 block).
AUTO_TABLE, AUTO_ROW, AUTO_DEPTH = "2c", "5-block", 50


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
    from nlrepro.models.non_local import NonLocalBlock

    twin = NonLocalBlock(x.shape[1], "gaussian", scope=block.scope, subsample=block.subsample,
                         norm="none", temporal_group=block.temporal_group)
    return twin.affinity(torch.zeros_like(x[:1]))[0] > 0


# ---- queries and keys --------------------------------------------------------------------
def peakedness(att: AttentionMap) -> torch.Tensor:
    """Per query: entropy of |f| normalised over its reachable keys, divided by the log of
    their number (0 = all weight on one key, 1 = uniform)."""
    w = att.weights.abs() * att.reachable
    p = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    n = att.reachable.sum(1).clamp_min(2).float()
    return entropy / n.log()


def auto_queries(att: AttentionMap, count: int = 1, among: torch.Tensor | None = None
                 ) -> list[int]:
    """The ``count`` queries with the most peaked affinity (lowest normalised entropy),
    taken from the ``among`` mask ``(N,)`` first (e.g. the proxy's probe positions), then
    from the other queries if it holds fewer than ``count``."""
    score = peakedness(att)
    if among is not None:
        score = score + 2.0 * (~among.to(torch.bool)).float()  # peakedness is within [0, 1]
    order = torch.argsort(score, stable=True)
    return [int(i) for i in order[:count]]


def lookup_mass(att: AttentionMap, target: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the share of each query's (absolute, reachable) affinity on the keys in
    ``target`` ``(M,)``."""
    w = att.weights.abs() * att.reachable
    return (w * target).sum(1) / w.sum(1).clamp_min(1e-12)


def strongest_queries(att: AttentionMap, source: torch.Tensor, target: torch.Tensor,
                      count: int = 1) -> list[int]:
    """The ``count`` queries in ``source`` ``(N,)`` that put the most affinity mass on the keys
    in ``target`` ``(M,)`` (the figure's example of a lookup; the ratio over test videos says
    how typical it is).  Ties go to the lower index."""
    mass = lookup_mass(att, target)
    score = torch.where(source.to(torch.bool), mass, torch.full_like(mass, -1.0))
    order = torch.argsort(-score, stable=True)
    return [int(i) for i in order[:count]]


def parse_query(text: str, grid: Grid) -> int:
    """``"t,y,x"`` on the block's query grid -> flat index; errors give the valid ranges."""
    try:
        t, y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--query {text!r}: expected 'auto' or 't,y,x' (three integers), e.g. "
                         "'3,2,1'") from None
    for name, v, n in zip("tyx", (t, y, x), grid.shape):
        if not 0 <= v < n:
            raise ConfigError(f"--query {text!r}: {name}={v} is outside 0..{n - 1} "
                             f"(the block's grid is T×H×W = {'×'.join(map(str, grid.shape))})")
    return grid.ravel(t, y, x)


def top_keys(att: AttentionMap, query: int, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` heaviest reachable keys of ``query`` (ties by index), heaviest first."""
    w = att.weights[query].masked_fill(~att.reachable[query], float("-inf"))
    k = min(k, int(att.reachable[query].sum()))
    values, index = torch.sort(w, descending=True, stable=True)
    return [int(i) for i in index[:k]], [float(v) for v in values[:k]]


# ---- the proxy's measurable property ------------------------------------------------------
def cue_mass_ratio(att: AttentionMap, query_mask: torch.Tensor, key_mask: torch.Tensor
                   ) -> dict[str, float]:
    """Affinity mass that queries in ``query_mask`` put on keys in ``key_mask``, against a
    uniform affinity over each query's reachable keys.

    For each query i: ``mass_i = Σ_{j ∈ K} |w_ij| / Σ_j |w_ij|`` and
    ``uniform_i = |K ∩ R_i| / |R_i|`` (R_i = reachable keys); the result averages both over
    the queries and reports ``ratio = mean mass / mean uniform`` (1 = no preference, 0 = never
    looks there).  Magnitudes, because a dot-product f can be negative; softmax and ReLU
    weights are non-negative already.
    """
    q = query_mask.nonzero().flatten()
    if len(q) == 0:
        raise ValueError("no query position falls inside the query region")
    if not key_mask.any():
        raise ValueError("no key position falls inside the key region")
    w = att.weights[q].abs() * att.reachable[q]
    reach = att.reachable[q].float()
    mass = (w * key_mask).sum(1) / w.sum(1)
    uniform = (reach * key_mask).sum(1) / reach.sum(1)
    m, u = float(mass.mean()), float(uniform.mean())
    return {"mass": m, "uniform": u, "ratio": m / u if u > 0 else math.inf,
            "queries": int(len(q)), "keys": int(key_mask.sum())}


# ---- drawing ------------------------------------------------------------------------------
def panel_windows(steps: int, panels: int = 4) -> list[list[int]]:
    """Split ``steps`` time steps into ``min(panels, steps)`` contiguous windows."""
    n = min(panels, steps)
    edges = [round(i * steps / n) for i in range(n + 1)]
    return [list(range(edges[i], edges[i + 1])) for i in range(n)]


def draw(frames: torch.Tensor, att: AttentionMap, queries: Sequence[int], top: int = 20,
         panels: int = 4, title: str = "") -> Any:
    """Figure 3: ``frames uint8 (F,H,W,3)`` of the clip the model saw; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F
    from matplotlib.patches import ConnectionPatch

    windows = panel_windows(att.query.shape[0], panels)
    step_panel = {t: p for p, ts in enumerate(windows) for t in ts}
    ft = att.query.cell[0]
    shown = [min(len(frames) - 1, int(((ts[0] + ts[-1] + 1) / 2) * ft)) for ts in windows]
    fig, axes = plt.subplots(2, len(windows), figsize=(2.6 * len(windows) + 0.8, 5.6),
                             squeeze=False, layout="constrained")
    for p, ts in enumerate(windows):
        first, last = int(ts[0] * ft), int(math.ceil((ts[-1] + 1) * ft)) - 1
        for row in range(2):
            ax = axes[row][p]
            ax.imshow(frames[shown[p]].numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][p].set_title(f"frame {shown[p]} (t={ts[0]}" + (f"–{ts[-1]}" if len(ts) > 1
                             else "") + f", frames {first}–{last})", fontsize=8)
    colours = plt.get_cmap("tab10")
    for n, q in enumerate(queries):
        keys, weights = top_keys(att, q, top)
        wmax = max(abs(v) for v in weights) or 1.0
        tq, yq, xq = att.query.centre(q)
        qa = axes[0][step_panel[att.query.unravel(q)[0]]]
        colour = colours(n % 10)
        for rank, (k, wk) in enumerate(zip(keys, weights)):
            _, yk, xk = att.key.centre(k)
            ka = axes[0][step_panel[att.key.unravel(k)[0]]]
            strength = abs(wk) / wmax
            arrow = ConnectionPatch(xyA=(xq, yq), coordsA=qa.transData, xyB=(xk, yk),
                                    coordsB=ka.transData, arrowstyle="-|>", color=colour,
                                    alpha=0.15 + 0.85 * strength, lw=0.4 + 1.6 * strength,
                                    mutation_scale=8, zorder=3)
            arrow.set_gid(f"arrow q{q} k{k} w{wk:.6g}")
            fig.add_artist(arrow)
            if rank < 3:
                ka.annotate(f"{wk:.3f}", (xk, yk), fontsize=6, color="white", zorder=4,
                            xytext=(2, -2), textcoords="offset points",
                            bbox={"boxstyle": "round,pad=0.1", "fc": colour, "alpha": 0.7,
                                  "lw": 0})
        qa.plot([xq], [yq], "o", ms=7, mfc="none", mec=colour, mew=2, zorder=4)
        qa.annotate(f"q{n}", (xq, yq), fontsize=7, color=colour, xytext=(4, 4),
                    textcoords="offset points", weight="bold")
    # Heat maps of the first query: its affinity per key cell, summed over each window.
    q = queries[0]
    T, Hk, Wk = att.key.shape
    w = (att.weights[q] * att.reachable[q]).reshape(T, Hk, Wk)
    H, W = frames.shape[1:3]
    sums = torch.stack([w[ts].sum(0) for ts in windows])
    lo, hi = min(0.0, float(sums.min())), float(sums.max()) or 1.0
    cover = (int(round(Hk * att.key.cell[1])), int(round(Wk * att.key.cell[2])))
    up = F.interpolate(sums[:, None], size=cover, mode="nearest")[:, 0]
    image = None
    for p, ts in enumerate(windows):
        ax = axes[1][p]
        image = ax.imshow(up[p].numpy(), cmap="magma", vmin=lo, vmax=hi, alpha=0.65,
                          extent=(-0.5, cover[1] - 0.5, cover[0] - 0.5, -0.5),
                          interpolation="nearest")
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_title(f"Σ affinity of q0 = {float(sums[p].sum()):.3f}", fontsize=8)
    fig.colorbar(image, ax=list(axes[1]), shrink=0.8, label="affinity (summed over t)")
    fig.suptitle(title or f"{att.block}: top-{top} keys per query", fontsize=10)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """PNG or PDF by suffix, without timestamps (same inputs -> same bytes)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("png", "pdf"):
        raise ConfigError(f"--out {str(path)!r}: the suffix must be .png or .pdf")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"Software": None} if kind == "png" else {"CreationDate": None, "Producer": None,
                                                     "Creator": None}
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, metadata=meta)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---- model and clip -----------------------------------------------------------------------
def checkpoint_path(ckpt: Path) -> Path:
    """A ``.ckpt`` file, or a run folder (its ``checkpoints/last.ckpt``)."""
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        ckpt = ckpt / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"no checkpoint at {ckpt}: give a .ckpt file, a run folder "
                                "holding checkpoints/last.ckpt, or 'auto'")
    return ckpt


def load_classifier(ckpt: Path) -> Any:
    """The trained ``VideoClassifier`` (eval mode) from a Lightning checkpoint.

    Loaded with ``weights_only=True``: the config is plain data in ``hyper_parameters``.
    """
    from nlrepro.module import VideoClassifier

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
    from nlrepro.data.datamodule import VideoDataModule

    dm = VideoDataModule(cfg)
    dm.prepare_data()
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
    from nlrepro.data.transforms import EvalTransform
    from nlrepro.data.video import open_video, read_frames, test_indices

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


def to_clip_regions(clip: Clip, regions: Sequence[tuple[float, float, float, float, float, float]]
                    ) -> list[tuple[float, float, float, float, float, float]]:
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


# ---- proxy ground truth --------------------------------------------------------------------
Region = tuple[float, float, float, float, float, float]


def proxy_truth(path: Path) -> dict[str, list[Region]] | None:
    """Where the cue and the probe of a proxy video are, in source units; None otherwise.

    The generator is deterministic per clip (``<root>/<split>/<class>/<split>_<index>.mp4``
    and ``<root>/proxy_config.json``), so the clip is rendered again and its ``ClipInfo``
    read: ``cue`` is the ``cue_box`` square over ``cue_frames``; ``probes`` the probe's box
    in each of its frames (``probe_boxes``, drawn over any decoy); ``cue_frames`` and
    ``probe_frames`` the whole frames of each event.
    """
    from nlrepro.config import ProxyConfig
    from nlrepro.data import proxy

    path = Path(path)
    record_file = path.parent.parent.parent / proxy.CONFIG_FILE
    split, _, index = path.stem.rpartition("_")
    if not record_file.is_file() or split not in proxy.SPLITS or not index.isdigit():
        return None
    record = json.loads(record_file.read_text())
    if record.get("generator_version") != proxy.GENERATOR_VERSION:
        return None
    cfg = ProxyConfig(**record["proxy"])
    frames, info = proxy.render_indexed(cfg, split, int(index))  # as the writer drew it
    (c0, c1), (cy, cx, side), p0 = info.cue_frames, info.cue_box, info.probe_start
    k = proxy.PROBE_SIZE
    probes: list[Region] = [(t, t + 1, y, y + k, x, x + k) for t, y, x in info.probe_boxes]
    T, H, W = frames.shape[:3]
    return {"cue": [(c0, c1, cy, cy + side, cx, cx + side)], "probes": probes,
            "cue_frames": [(c0, c1, 0, H, 0, W)], "probe_frames": [(p0, T, 0, H, 0, W)]}


def proxy_test_videos(path: Path) -> list[Path]:
    """The test list of the proxy dataset that holds ``path`` (``<root>/test.csv``)."""
    root = Path(path).parent.parent.parent
    lines = (root / "test.csv").read_text().splitlines()
    return [root / line.split()[0] for line in lines if line.strip()]


def proxy_masks(att: AttentionMap, clip: Clip) -> dict[str, torch.Tensor] | None:
    """For a proxy clip: queries ``(N,)`` on a probe (``probes``) or on the cue
    (``cue_queries``); keys ``(M,)`` on the cue's box over its frames (``cue``), on the cue's
    whole frames (``cue_frames``), on the probe's whole frames (``probe_frames``); None for
    any other video."""
    regions = proxy_regions(clip)
    return None if regions is None else region_masks(att, regions)


def proxy_regions(clip: Clip) -> dict[str, list[Region]] | None:
    """``proxy_truth`` in the clip's units (one re-rendering of the clip); None for any
    other video."""
    truth = proxy_truth(clip.path)
    return None if truth is None else {k: to_clip_regions(clip, v) for k, v in truth.items()}


def region_masks(att: AttentionMap, regions: dict[str, list[Region]]) -> dict[str, torch.Tensor]:
    """``proxy_masks`` on ``att``'s grids from ``proxy_regions``."""
    return {"probes": att.query.region_mask(regions["probes"]),
            "cue_queries": att.query.region_mask(regions["cue"]),
            "cue": att.key.region_mask(regions["cue"]),
            "cue_frames": att.key.region_mask(regions["cue_frames"]),
            "probe_frames": att.key.region_mask(regions["probe_frames"])}


# Cross-time affinity on a proxy clip, both ways: (query mask, key masks) per direction, and
# the key mask each direction is summed up by (the other event's whole frames).
DIRECTIONS = {"probe_to_cue": ("probes", ("cue", "cue_frames")),
              "cue_to_probe": ("cue_queries", ("probe_frames",))}
FRAMES = {"probe_to_cue": "cue_frames", "cue_to_probe": "probe_frames"}


def proxy_ratios(att: AttentionMap, masks: dict[str, torch.Tensor]
                 ) -> dict[str, dict[str, dict[str, float]] | ValueError]:
    """``{direction: {key region: cue_mass_ratio}}`` for both directions of ``DIRECTIONS``:
    the probe's positions onto the cue (its box over its frames, its whole frames), and the
    cue's positions onto the probe's frames.  The task is symmetric: a block can bring the
    cue to the probe or the probe to the cue (then the match is computed where the cue is);
    trained proxy models do either, depending on the seed (docs/PROXY.md).  A direction whose
    queries or keys are outside the clip's crop holds the ``ValueError`` instead."""
    out: dict[str, Any] = {}
    for direction, (queries, regions) in DIRECTIONS.items():
        try:
            out[direction] = {r: cue_mass_ratio(att, masks[queries], masks[r]) for r in regions}
        except ValueError as err:
            out[direction] = err
    return out


def proxy_cue_ratio(att: AttentionMap, clip: Clip) -> dict[str, dict[str, float]] | None:
    """For a proxy clip: affinity from the probe positions onto the cue (its box over its
    frames) and onto the cue's frames, each against uniform (see ``cue_mass_ratio``)."""
    masks = proxy_masks(att, clip)
    if masks is None:
        return None
    result = proxy_ratios(att, masks)["probe_to_cue"]
    if isinstance(result, ValueError):
        raise result
    return result


Captured = tuple[AttentionMap, dict[str, torch.Tensor]]  # a block's affinity and proxy_masks


def _proxy_captures(model: nn.Module, cfg: Any, paths: Sequence[Path],
                    blocks: Sequence[str | None]) -> Iterator[tuple[Path, dict[str, Captured]]]:
    """(path, ``{block: (affinity, proxy_masks)}``) for each proxy clip of ``paths``, one at a
    time: one decode, one forward pass and one ground truth per clip, however many blocks."""
    for path in paths:
        clip = load_clip(cfg, path)
        regions = proxy_regions(clip)
        if regions is None:
            continue
        atts = capture_blocks(model, clip.tensor, blocks)
        yield path, {name: (att, region_masks(att, regions)) for name, att in atts.items()}


def mean_ratios(model: nn.Module, cfg: Any, paths: Sequence[Path], block: str | None
                ) -> dict[str, dict[str, dict[str, float]]]:
    """``proxy_ratios`` over several proxy clips (one capture and one ground truth per clip):
    per direction and key region, the mean over clips of the queries' mass and of the
    uniform share, and ``ratio`` = mean mass / mean uniform.  Clips that are no proxy clips,
    or where a direction's queries or keys fall outside the crop, are left out of that
    direction; a direction measured on no clip is absent."""
    return next(iter(_blocks_mean_ratios(model, cfg, paths, [block]).values()))


def _blocks_mean_ratios(model: nn.Module, cfg: Any, paths: Sequence[Path],
                        blocks: Sequence[str | None]
                        ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``mean_ratios`` of each of ``blocks`` (``None``: the first), from one pass over the
    clips."""
    names = [pick_block(model, b)[0] for b in blocks]
    per: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {n: {} for n in names}
    for _, by_block in _proxy_captures(model, cfg, paths, names):
        for name, (att, masks) in by_block.items():
            for direction, regions in proxy_ratios(att, masks).items():
                if isinstance(regions, ValueError):
                    continue
                for region, d in regions.items():
                    for k in ("mass", "uniform"):
                        per[name].setdefault(direction, {}).setdefault(region, {}).setdefault(
                            k, []).append(d[k])
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {n: {} for n in names}
    for name, directions in per.items():
        for direction, regions in directions.items():
            for region, d in regions.items():
                mass = sum(d["mass"]) / len(d["mass"])
                uniform = sum(d["uniform"]) / len(d["uniform"])
                out[name].setdefault(direction, {})[region] = {
                    "mass": mass, "uniform": uniform, "ratio": mass / uniform,
                    "clips": len(d["mass"])}
    return out


def headline_ratios(mean: dict[str, dict[str, dict[str, float]]]) -> dict[str, float | None]:
    """Per direction, the ratio on the other event's whole frames (``FRAMES``) from
    ``mean_ratios``; None for a direction that was not measured."""
    return {d: mean.get(d, {}).get(r, {}).get("ratio") for d, r in FRAMES.items()}


def block_ratios(model: nn.Module, cfg: Any, paths: Sequence[Path]
                 ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``mean_ratios`` of every NL block of ``model``, in the model's order (one forward
    pass per clip for all of them)."""
    return _blocks_mean_ratios(model, cfg, paths, list(nonlocal_blocks(model)))


def strongest_block(per_block: dict[str, dict[str, dict[str, dict[str, float]]]]
                    ) -> tuple[str, str, float]:
    """(block, direction, ratio) of the largest headline ratio over blocks and both
    directions (``block_ratios``); ties go to the earlier block.  Which block and which way
    relate the two events is the training run's choice (docs/PROXY.md), so the figure shows
    the block that does it most and the report lists all of them."""
    best: tuple[str, str, float] | None = None
    for name, mean in per_block.items():
        for direction, ratio in headline_ratios(mean).items():
            if ratio is not None and (best is None or ratio > best[2]):
                best = (name, direction, ratio)
    if best is None:
        raise ConfigError("--block strongest: no block's cross-time affinity could be measured "
                         "on these clips")
    return best


STRONGEST = "strongest"
EXAMPLE = "example"
EXAMPLE_MASS = 0.5


def lookup_masks(masks: dict[str, torch.Tensor], direction: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries, keys) of a direction: the probe's positions and the cue's frames, or the
    cue's positions and the probe's frames."""
    return masks[DIRECTIONS[direction][0]], masks[FRAMES[direction]]


def typical_mass(mean: dict[str, dict[str, dict[str, float]]], direction: str) -> float:
    """The mean share of affinity that ``direction``'s queries put on the other event's
    frames over the test clips (``mean_ratios``); ``EXAMPLE_MASS`` when not measured."""
    return mean.get(direction, {}).get(FRAMES[direction], {}).get("mass", EXAMPLE_MASS)


def example_video(model: nn.Module, cfg: Any, paths: Sequence[Path], block: str | None,
                  direction: str, min_mass: float = EXAMPLE_MASS) -> Path:
    """The first of ``paths`` (proxy test clips, in list order) where some query of
    ``direction`` puts at least ``min_mass`` of its affinity on the other event's frames: an
    example of the lookup that the ratio over the test clips measures (the ratio, not the
    example, is the evidence; the command passes ``typical_mass``, so the example is as strong
    as the average query, not a borderline one).  The first clip when none does."""
    for path, by_block in _proxy_captures(model, cfg, paths, [block]):
        att, masks = next(iter(by_block.values()))
        source, target = lookup_masks(masks, direction)
        if source.any() and float(lookup_mass(att, target)[source.bool()].max()) >= min_mass:
            return path
    return paths[0]


# ---- command line ---------------------------------------------------------------------------
def auto_checkpoint(profile: str, results: Path, seed: int, sets: list[str],
                    best: bool = False) -> Path:
    """The checkpoint of Table 2c's 5-block R50 run (``AUTO_*``) for ``seed``.

    The run is the table's own (same config hash), so ``make table2c`` and ``make figure3``
    share it: a done run (or a done twin under another table) is reused; on the proxy a
    missing one is trained here.  ``best``: of the row's seeds that are done, the one with the
    highest test top-1, ties broken by the lower validation loss (a figure of what a trained
    block does shows the best-trained model, chosen by its fit, never by how its attention
    looks); ``seed`` when none is done.
    """
    from nlrepro.sweep import expand, grid_path, load_grid, reuse_done_twin, write_spec
    from nlrepro.train import read_summary, train_run_dir

    specs = [s for s in expand(load_grid(grid_path(AUTO_TABLE)), profile, results, sets)
             if AUTO_ROW in s.labels and s.depth == AUTO_DEPTH]
    spec = next((s for s in specs if s.seed == seed), None)
    if best:
        done = [s for s in specs if reuse_done_twin(s, results)]
        metrics = {s.seed: (read_summary(s.run_dir) or {}).get("metrics", {}) for s in done}
        ranked = sorted((s for s in done if metrics[s.seed].get("test/top1_video") is not None),
                        key=lambda s: (-metrics[s.seed]["test/top1_video"],
                                       metrics[s.seed].get("val/loss", float("inf")), s.seed))
        spec = ranked[0] if ranked else spec
    if spec is None:
        raise ConfigError(f"--seed {seed}: Table {AUTO_TABLE} runs seeds "
                          f"{sorted(s.seed for s in specs)} on profile {profile!r}")
    if not reuse_done_twin(spec, results):
        if profile != "proxy":
            raise ConfigError(f"'auto' trains only on the proxy profile; run Table {AUTO_TABLE} "
                              f"first (`PROFILE={profile} make table{AUTO_TABLE}`) or pass the "
                              f"checkpoint of a trained NL run")
        write_spec(spec)
        train_run_dir(spec.run_dir)
    summary = read_summary(spec.run_dir) or {}
    return checkpoint_path(Path(summary.get("reused_from") or spec.run_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", metavar="CKPT",
                        help="a .ckpt file, a run folder, or 'auto' (Table 2c's 5-block R50 "
                             "run of --profile, the paper's Figure 3 model; trained if missing "
                             "on proxy)")
    parser.add_argument("--video", default="0",
                        help="a video file, an index into the run's test list (default 0), or "
                             f"'{EXAMPLE}' (proxy: the first test clip where a query of the "
                             "dominant direction puts at least the test clips' mean share of "
                             "its affinity on the other event's frames)")
    parser.add_argument("--block", default=None,
                        help="NL block, e.g. res3.1, or 'strongest' (proxy: the block whose "
                             "lookup between cue and probe is the largest multiple of uniform "
                             "on the --ratio-videos test clips); default: the first one")
    parser.add_argument("--query", action="append", default=None, metavar="auto|t,y,x",
                        help="query position on the block's grid; repeat for several "
                             "(default: auto = the most peaked affinity, on a probe for a "
                             "proxy clip)")
    parser.add_argument("--num-queries", type=int, default=1,
                        help="how many queries 'auto' picks (default 1)")
    parser.add_argument("--top", type=int, default=20, help="arrows per query (default 20)")
    parser.add_argument("--panels", type=int, default=4, help="frames shown (default 4)")
    parser.add_argument("--out", type=Path, default=None,
                        help="FILE.png or FILE.pdf (default: paper_tables/<profile>/figure3.png "
                             "for auto, else the run folder); the report goes next to it as "
                             "FILE.json")
    parser.add_argument("--ratio-videos", type=int, default=50,
                        help="proxy only: also average the cross-time mass ratios (probe->cue, "
                             "cue->probe) over the first N test videos (default 50; 0: only "
                             "the drawn clip)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the rendering and, for auto, of the Table 2c run used")
    parser.add_argument("--best", action="store_true",
                        help="auto: use the done Table 2c seed with the highest test top-1 "
                             "(ties: the lower validation loss)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one clip is small, and more threads "
                             "than idle cores slow CPU inference down by orders of magnitude)")
    parser.add_argument("--profile", default="proxy", help="profile of the 'auto' run")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder of the 'auto' run")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of the 'auto' run")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (a committed report names no
    machine's folders), else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _rounded(d: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in x.items()}
            for k, x in d.items()}


def main(args: argparse.Namespace) -> int:
    if args.top < 1 or args.num_queries < 1 or args.panels < 1 or args.threads < 1:
        raise ConfigError(f"--top {args.top}, --num-queries {args.num_queries}, "
                          f"--panels {args.panels} and --threads {args.threads} must be >= 1")
    if args.ratio_videos < 0:
        raise ConfigError(f"--ratio-videos {args.ratio_videos} must be >= 0")
    if args.out is not None and args.out.suffix.lower() not in (".png", ".pdf"):
        raise ConfigError(f"--out {str(args.out)!r}: the suffix must be .png or .pdf")
    from nlrepro.train import setup_logging

    setup_logging()  # nlrepro's log lines on stderr; stdout holds only the JSON report
    torch.manual_seed(args.seed)
    auto = str(args.ckpt) == "auto"
    ckpt = auto_checkpoint(args.profile, args.results, args.seed, args.sets, args.best) if auto \
        else checkpoint_path(Path(args.ckpt))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # after training (auto), which sets its own
    try:
        return _render(args, ckpt, auto)
    finally:
        torch.set_num_threads(threads)


def _measure(att: AttentionMap, masks: dict[str, torch.Tensor],
             mean: dict[str, Any]) -> dict[str, Any]:
    """Both directions of cross-time affinity (``DIRECTIONS``) on the drawn clip and, from
    ``mean`` (``mean_ratios``), on the test videos, each ``{"clip": ..., "test_videos": ...}``."""
    out: dict[str, Any] = {}
    for direction, result in proxy_ratios(att, masks).items():
        out[direction] = {"clip": {"error": str(result)} if isinstance(result, ValueError)
                          else _rounded(result)}
        if direction in mean:
            out[direction]["test_videos"] = _rounded(mean[direction])
    return out


def _headline(measured: dict[str, Any], name: str, region: str) -> float | None:
    """A direction's ratio: on the test videos when measured, else on the drawn clip."""
    d = measured[name]
    return (d.get("test_videos") or d["clip"]).get(region, {}).get("ratio")


def _dominant(ratios: dict[str, float | None]) -> str:
    known = {k: v for k, v in ratios.items() if v is not None}
    return max(known, key=known.get) if known else "probe_to_cue"


def _render(args: argparse.Namespace, ckpt: Path, auto: bool) -> int:
    model = load_classifier(ckpt)
    cfg = model.cfg
    example = args.video == EXAMPLE
    first = video_path(cfg, "0" if example else args.video)
    tests = proxy_test_videos(first)[:args.ratio_videos] \
        if proxy_truth(first) is not None else []
    if example and not tests:
        raise ConfigError(f"--video {EXAMPLE}: needs a proxy run and --ratio-videos >= 1 (the "
                          "example is chosen by the direction measured on the test clips)")
    block, per_block = args.block, {}
    if block not in (None, STRONGEST):
        try:
            pick_block(model, block)  # a wrong name fails before any clip is measured
        except ConfigError as err:
            raise ConfigError(f"{err}, or '{STRONGEST}'") from None
    if block == STRONGEST:
        if not tests:
            raise ConfigError(f"--block {STRONGEST}: needs a proxy run and --ratio-videos >= 1 "
                              "(the block is chosen by its ratios on the test clips)")
        per_block = block_ratios(model, cfg, tests)
        block = strongest_block(per_block)[0]
    mean = per_block.get(block) or (mean_ratios(model, cfg, tests, block) if tests else {})
    dominant = _dominant(headline_ratios(mean))
    path = example_video(model, cfg, tests, block, dominant,
                         typical_mass(mean, dominant)) if example else first
    clip = load_clip(cfg, path)
    att = capture(model, clip.tensor, block)
    masks = proxy_masks(att, clip)
    measured: dict[str, Any] = {}
    if masks is not None:
        measured = _measure(att, masks, mean)
        ratios = {d: _headline(measured, d, r) for d, r in FRAMES.items()}
        direction = _dominant(ratios)
        # Draw the direction the block uses more: its strongest lookup in this clip.
        source, target = lookup_masks(masks, direction)
    queries: list[int] = []
    for q in args.query or ["auto"]:
        if q != "auto":
            queries.append(parse_query(q, att.query))
        elif masks is not None and source.any():
            queries += strongest_queries(att, source, target, args.num_queries)
        else:
            queries += auto_queries(att, args.num_queries)
    probs = torch.softmax(att.logits, 0)
    nl = cfg.model.nonlocal_
    title = (f"{att.block} ({nl.instantiation}, {nl.scope}) on {clip.path.name}: "
             f"predicted class {int(probs.argmax())} ({float(probs.max()):.2f})")
    out = Path(args.out or (ROOT / "paper_tables" / args.profile / "figure3.png" if auto
                            else ckpt.parent.parent / f"figure3_{att.block}_{clip.path.stem}.png"))
    save_figure(draw(clip.frames, att, queries, args.top, args.panels, title), out)
    report: dict[str, Any] = {"out": str(out), "checkpoint": str(ckpt), "video": _shown(clip.path),
                              "block": att.block, "instantiation": nl.instantiation,
                              "scope": nl.scope, "grid": list(att.query.shape),
                              "key_grid": list(att.key.shape), "queries": []}
    peaked = peakedness(att)
    for q in queries:
        keys, weights = top_keys(att, q, args.top)
        report["queries"].append({
            "t,y,x": list(att.query.unravel(q)),
            "on_probe": None if masks is None else bool(masks["probes"][q]),
            "on_cue": None if masks is None else bool(masks["cue_queries"][q]),
            "peakedness": round(float(peaked[q]), 4),
            "top5 (key t,y,x: weight)": {",".join(map(str, att.key.unravel(k))): round(w, 5)
                                         for k, w in zip(keys[:5], weights[:5])}})
    if masks is not None:
        report.update(measured)
        # Headlines (1 = uniform): probe queries' mass on the cue's frames, and the larger of
        # the two directions, on test videos when measured.
        report["cue_mass_ratio"] = ratios["probe_to_cue"]
        report["cross_time"] = {"direction": direction, "ratio": ratios[direction],
                                "ratios": ratios}
        logging.getLogger("nlrepro.attention").info(
            "cross-time affinity (1 = uniform): probe->cue frames %s, cue->probe frames %s",
            ratios["probe_to_cue"], ratios["cue_to_probe"])
    if per_block:
        report["blocks"] = {name: {d: None if r is None else round(r, 4)
                                   for d, r in headline_ratios(block_mean).items()}
                            for name, block_mean in per_block.items()}
    text = json.dumps(report, indent=2)
    out.with_suffix(".json").write_text(text + "\n")
    print(text)
    return 0
