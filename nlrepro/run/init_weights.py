"""``trainer.init_from``: start a run from another run's weights, or refuse loudly.

Table 2g fine-tunes each Table 2f run. A checkpoint that loads only partly would start the
fine-tuning from random weights without a word, so every entry the target model expects must
load, except those matching :data:`ALLOWED_MISSING`.  What a 2f → 2g load legitimately leaves
out is on the *checkpoint* side, not the model's: the W_z BN of each non-local block
(``model.nonlocal.norm: none`` has no place for it) is ignored, and every backbone BN is folded
into a frozen affine layer (``fold_bn_state_dict``), which then loads fully.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from nlrepro.errors import ConfigError
from nlrepro.models.frozen_bn import fold_bn_state_dict

COMPILED = "_orig_mod."  # torch.compile (trainer.compile) inserts this after ``model.``
# Expected entries that may stay as the model initialised them.
#   num_batches_tracked: a BN counter, not a weight (only used with momentum=None).
ALLOWED_MISSING: tuple[str, ...] = (r"(^|\.)num_batches_tracked$",)
EXAMPLES = 5


def strip_compiled(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint keys of a compiled model (``model._orig_mod.x``) as plain ones (``model.x``)."""
    return {k.replace(COMPILED, ""): v for k, v in state.items()}


def load_init_weights(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Load ``path``'s ``state_dict`` into ``model``; ``ConfigError`` unless all of it fits.

    Returns the report kept in the summary: ``loaded``, ``skipped`` (in the checkpoint, not
    used) and ``missing`` (expected, allowed to stay initialised).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    # Strip first: folding looks BN entries up under the model's own (uncompiled) names.
    state = fold_bn_state_dict(strip_compiled(state), model)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    refused = [k for k in missing if not any(re.search(p, k) for p in ALLOWED_MISSING)]
    if refused:
        shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                  for k in refused if k in state][:EXAMPLES]
        absent = [k for k in refused if k not in state][:EXAMPLES]
        raise ConfigError(
            f"trainer.init_from: {path!r} does not fit this model: {len(refused)} of "
            f"{len(own)} expected entries would stay random (absent: {absent}"
            f"{f'; other shape: {shapes}' if shapes else ''}); is it a checkpoint of the "
            "parent run (same architecture, depth and non-local placement)?")
    model.load_state_dict(usable, strict=False)
    return {"loaded": sorted(usable), "skipped": sorted(set(state) - set(usable)),
            "missing": missing}
