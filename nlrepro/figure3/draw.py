"""Draw Figure 3: four frames spanning the clip, arrows from each query to its heaviest keys
(alpha and width by weight), and below them the first query's affinity over every key,
summed per window of time steps and upsampled onto the frame."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from nlrepro.config import ConfigError
from nlrepro.figure3.capture import AttentionMap
from nlrepro.figure3.measure import top_keys
from nlrepro.utils import save_figure as save_atomically


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
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("png", "pdf"):
        raise ConfigError(f"--out {str(path)!r}: the suffix must be .png or .pdf")
    meta = {"Software": None} if kind == "png" else {"CreationDate": None, "Producer": None,
                                                     "Creator": None}
    return save_atomically(fig, path, dpi=150, metadata=meta)
