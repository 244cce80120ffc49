"""Where non-local blocks go: the user-facing (count, stages) axes compiled into explicit lists.

A placement is ``{"res3": [1, 3], "res4": [1, 3, 5]}``: for each stage, the sorted 0-based
indices of the residual blocks *after* which a NL block is inserted (stages without blocks are
left out).  One rule produces every placement of the paper and the official release
(VNL ``res_stage_nonlocal``: a block after residual block ``idx`` when
``idx % mod == mod - 1``):

* ``k`` blocks in a stage of ``n`` residual blocks go after blocks ``(i + 1) * (n // k) - 1``,
  ``i = 0 .. k-1`` (VNL's ``mod = n // k``).
* ``blocks=1``: one block "right before the last residual block" of each stage in ``stages``
  (default res4), i.e. after block ``n - 2``.  A stage of a single residual block (the narrow
  proxy net's res2/res5) gets its block after block 0, at the end of the stage.
* ``blocks=5``: 2 in res3 + 3 in res4.  R50: res3 [1, 3], res4 [1, 3, 5]; R101: res3 [1, 3],
  res4 [6, 13, 20] (``23 // 3 = 7``: exactly VNL's R101 layer_mod 7).
* ``blocks=10``: 4 in res3 + 6 in res4.  R50: every block of res3 and res4.  R101 is not
  specified by any release; the same rule gives res3 [0, 1, 2, 3] + res4 every 3rd block
  (``23 // 6 = 3``) = [2, 5, 8, 11, 14, 17] (see ``R101_10_BLOCK_NOTE``).

Narrow networks (``ModelConfig.stage_blocks``) use the same rule, so a stage of the R50 size
gets the R50 indices, and a smaller stage gets every block when it holds exactly as many
residual blocks as NL blocks (e.g. 5 blocks on stages (1, 2, 3, 1) = every block of res3+res4).
A stage holding fewer residual blocks than NL blocks raises ``ConfigError`` (a ``ValueError``).
"""

from __future__ import annotations

from typing import Any, Sequence

from nlrepro.choices import BLOCKS_PER_DEPTH, STAGES
from nlrepro.errors import ConfigError

# NL blocks per stage for the multi-stage counts of Table 2c.
MULTI_STAGE_COUNTS = {5: {"res3": 2, "res4": 3}, 10: {"res3": 4, "res4": 6}}
VALID_COUNTS = (0, 1, *MULTI_STAGE_COUNTS)

Placement = dict[str, list[int]]


def stage_blocks_of(model_cfg: Any) -> dict[str, int]:
    """Residual blocks per stage: ``stage_blocks`` if set, else (3,4,6,3) / (3,4,23,3)."""
    sizes = model_cfg.stage_blocks
    if sizes is None:
        if model_cfg.depth not in BLOCKS_PER_DEPTH:
            raise ConfigError(f"model.depth: {model_cfg.depth!r} is not valid; "
                             f"choose one of {list(BLOCKS_PER_DEPTH)}")
        sizes = BLOCKS_PER_DEPTH[model_cfg.depth]
    if len(sizes) != len(STAGES) or any(int(n) < 1 for n in sizes):
        raise ConfigError(f"model.stage_blocks: {list(sizes)!r} is not valid; give 4 positive "
                         f"block counts for {list(STAGES)}")
    return dict(zip(STAGES, (int(n) for n in sizes)))


def spread(k: int, n: int) -> list[int]:
    """Indices of ``k`` NL blocks in a stage of ``n`` residual blocks (VNL: ``mod = n // k``)."""
    step = n // k
    return [(i + 1) * step - 1 for i in range(k)]


def compile_placement(blocks: int | dict[str, Sequence[int]] | Sequence[Sequence[int]],
                      stages: Sequence[str] | None, stage_blocks: dict[str, int],
                      depth: int, fill: bool = False) -> Placement:
    """``(blocks, stages)`` -> ``{"res3": [1, 3], ...}`` for a network with ``stage_blocks``.

    ``blocks`` is 0, 1, 5, 10, an explicit ``{stage: [indices]}`` mapping, or a PySlowFast
    style list of 4 index lists (res2..res5).  ``depth`` only names the network in errors:
    the stage sizes decide.  ``fill`` lets a 5/10-block count take every residual block of a
    stage too small for it (narrow proxy networks).  Raises ``ConfigError`` (a ``ValueError``) naming the bad value
    and the valid ones.
    """
    name = f"R{depth} with stage blocks {[stage_blocks[s] for s in STAGES]}"
    if isinstance(blocks, bool):
        raise ConfigError(f"model.nonlocal.blocks: {blocks!r} is not valid; choose one of "
                         f"{list(VALID_COUNTS)} or explicit indices per stage")
    if isinstance(blocks, int):
        return _from_count(blocks, stages, stage_blocks, name, fill)
    if isinstance(blocks, dict):
        return _explicit(dict(blocks), stage_blocks, name)
    if isinstance(blocks, (list, tuple)) and len(blocks) == len(STAGES):
        return _explicit(dict(zip(STAGES, blocks)), stage_blocks, name)
    raise ConfigError(f"model.nonlocal.blocks: {blocks!r} is not valid; choose one of "
                     f"{list(VALID_COUNTS)}, a mapping stage -> indices, or 4 index lists")


def _from_count(count: int, stages: Sequence[str] | None, stage_blocks: dict[str, int],
                name: str, fill: bool = False) -> Placement:
    if count == 0:
        return {}
    if count == 1:
        chosen = list(stages) if stages is not None else ["res4"]
        _check_stages(chosen)
        return {s: [max(stage_blocks[s] - 2, 0)] for s in STAGES if s in chosen}
    if count not in MULTI_STAGE_COUNTS:
        raise ConfigError(f"model.nonlocal.blocks: {count} is not valid; choose one of "
                         f"{list(VALID_COUNTS)} or explicit indices per stage")
    per_stage = MULTI_STAGE_COUNTS[count]
    if stages is not None and sorted(stages) != sorted(per_stage):
        raise ConfigError(f"model.nonlocal.stages: {list(stages)} is not valid with blocks="
                         f"{count}; the {count}-block placement uses {list(per_stage)} "
                         f"(leave stages unset, or give explicit indices)")
    out: Placement = {}
    for stage, k in per_stage.items():
        n = stage_blocks[stage]
        if n < k and fill:
            k = n
        if n < k:
            need = ", ".join(f"{s} >= {c}" for s, c in per_stage.items())
            raise ConfigError(f"model.nonlocal.blocks: {count} does not fit {name}: {stage} "
                             f"holds {n} residual blocks, {k} NL blocks needed ({need}); "
                             f"valid block counts here: {_fitting_counts(stage_blocks)} "
                             "(or set model.nonlocal.fill_small_stages: true)")
        out[stage] = spread(k, n)
    return out


def _fitting_counts(stage_blocks: dict[str, int]) -> list[int]:
    return [0, 1] + [c for c, per in MULTI_STAGE_COUNTS.items()
                     if all(stage_blocks[s] >= k for s, k in per.items())]


def _explicit(given: dict[str, Sequence[int]], stage_blocks: dict[str, int],
              name: str) -> Placement:
    _check_stages(list(given))
    out: Placement = {}
    for stage in STAGES:
        idx = given.get(stage) or []
        n = stage_blocks[stage]
        for i in idx:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise ConfigError(f"model.nonlocal.blocks: index {i!r} in {stage} is not valid "
                                 f"for {name}; valid indices: 0..{n - 1}")
        if len(set(idx)) != len(idx):
            raise ConfigError(f"model.nonlocal.blocks: {stage} lists an index twice: {list(idx)}")
        if idx:
            out[stage] = sorted(idx)
    return out


def _check_stages(stages: Sequence[str]) -> None:
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"model.nonlocal.stages: {s!r} is not valid; choose from "
                             f"{list(STAGES)}")


def positions(placement: Placement) -> list[str]:
    """``{"res3": [1, 3]}`` -> ``["res3.1", "res3.3"]`` (the keys of ``nonlocal_blocks()``)."""
    return [f"{s}.{i}" for s in STAGES for i in placement.get(s, [])]


# For the table footnotes: the one placement no release specifies.
R101_10_BLOCK_NOTE = (
    "R101 10-block (not specified by the paper or any release): every block of res3 and every "
    "3rd block of res4 (VNL's rule with mod = 23 // 6): "
    + ", ".join(positions({"res3": spread(4, BLOCKS_PER_DEPTH[101][1]),
                           "res4": spread(6, BLOCKS_PER_DEPTH[101][2])})) + ".")


def temporal_sizes(frames: int, stem_temporal_stride: int, stem_pool: bool,
                   pool2: bool) -> dict[str, int]:
    """Temporal length of each feature map; ``ConfigError`` when a pool gets under 2 frames."""
    def pool(t: int, name: str) -> int:
        if t < 2:
            raise ConfigError(f"data.frames: {frames} is too short: {name} needs at least "
                             f"2 frames, gets {t}")
        return (t - 2) // 2 + 1
    t = (frames - 1) // stem_temporal_stride + 1   # conv1: odd kernel t, padding t // 2
    sizes = {"conv1": t}
    t = pool(t, "pool1") if stem_pool else t
    sizes["pool1"] = sizes["res2"] = t
    t = pool(t, "pool2") if pool2 else t
    sizes.update(pool2=t, res3=t, res4=t, res5=t)
    return sizes
