"""Measure a captured affinity: which queries to show, and how much a block's queries on one
proxy event look at the other event's frames against a uniform affinity.

``cue_mass_ratio`` measures what the proxy task is built on: queries on one event (the probe,
late; or the cue, early) should put far more affinity on the other event's frames than a
uniform affinity over the keys they can reach would.  The task is symmetric, so a block may
bring the cue to the probe or the probe to the cue; both directions are measured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from nlrepro.config import ConfigError
from nlrepro.figure3.capture import (AttentionMap, Clip, Grid, capture_blocks, load_clip,
                                     nonlocal_blocks, pick_block, to_clip_regions)
from nlrepro.proxy.truth import Region, proxy_truth


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
