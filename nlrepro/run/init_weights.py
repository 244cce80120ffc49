"""``trainer.init_from``: start a run from another run's weights, or refuse loudly.

Table 2g fine-tunes each Table 2f run. A checkpoint that loads only partly would start the
fine-tuning from random weights without a word, so every entry the target model expects must
load, except those matching :data:`ALLOWED_MISSING`.  What a 2f → 2g load legitimately leaves
out is on the *checkpoint* side, not the model's: the W_z BN of each non-local block
(``model.nonlocal.norm: none`` has no place for it) is ignored, or, with
``fold_nonlocal_bn``, folded into W_z (``fold_nonlocal_bn_state_dict``), and every backbone BN
is folded into a frozen affine layer (``fold_bn_state_dict``), which then loads fully.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from nlrepro.errors import ConfigError
from nlrepro.models.frozen_bn import fold_bn_state_dict, pop_folded_bn
from nlrepro.models.non_local import NonLocalBlock

COMPILED = "_orig_mod."  # torch.compile (trainer.compile) inserts this after ``model.``
# Expected entries that may stay as the model initialised them.
#   num_batches_tracked: a BN counter, not a weight (only used with momentum=None).
ALLOWED_MISSING: tuple[str, ...] = (r"(^|\.)num_batches_tracked$",)
EXAMPLES = 5
NONLOCAL_BN_EPS = 1e-5  # the W_z BN of NonLocalBlock keeps PyTorch's default ε


def strip_compiled(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint keys of a compiled model (``model._orig_mod.x``) as plain ones (``model.x``)."""
    return {k.replace(COMPILED, ""): v for k, v in state.items()}


def fold_nonlocal_bn_state_dict(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """For every BN-less non-local block of ``model`` whose parent block had a W_z BN in
    ``state``: W_z ← scale · W_z and b ← scale · b + shift (BN in eval mode, ``frozen_bn.fold``),
    the BN entries dropped.  The block then computes what the parent's did."""
    out = dict(state)
    for name, module in model.named_modules():
        if not isinstance(module, NonLocalBlock) or module.bn is not None:
            continue
        p = f"{name}." if name else ""
        if f"{p}bn.running_mean" not in out or f"{p}w_z.weight" not in out:
            continue
        scale, shift = pop_folded_bn(out, f"{p}bn.", NONLOCAL_BN_EPS)
        w = out[f"{p}w_z.weight"]
        out[f"{p}w_z.weight"] = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
        out[f"{p}w_z.bias"] = out[f"{p}w_z.bias"] * scale + shift
    return out


def load_init_weights(model: nn.Module, path: str, fold_nonlocal_bn: bool = False
                      ) -> dict[str, list[str]]:
    """Load ``path``'s ``state_dict`` into ``model``; ``ConfigError`` unless all of it fits.

    Returns the report kept in the summary: ``loaded``, ``skipped`` (in the checkpoint, not
    used) and ``missing`` (expected, allowed to stay initialised).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    # Strip first: folding looks BN entries up under the model's own (uncompiled) names.
    state = fold_bn_state_dict(strip_compiled(state), model)
    if fold_nonlocal_bn:
        state = fold_nonlocal_bn_state_dict(state, model)
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
