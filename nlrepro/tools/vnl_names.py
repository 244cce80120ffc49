"""Caffe2 blob names of the official release (video-nonlocal-net) for nlrepro's modules.

The release builds its networks in ``lib/models/resnet_video_org.py``, ``resnet_helper.py``
and ``nonlocal_helper.py``, and its blob names follow from the prefixes passed there:

* a convolution ``P`` stores ``P_w`` (and ``P_b`` when it has a bias), with the same
  ``(out, in, t, h, w)`` layout as ``torch.nn.Conv3d``; the FC ``pred`` stores ``pred_w``
  ``(classes, channels)`` and ``pred_b``;
* a BN after convolution ``P`` is ``P_bn``: ``_s`` (γ), ``_b`` (β), ``_rm`` (running mean)
  and ``_riv`` (running *variance*, despite the name: it is the SpatialBN op's running-var
  output).  With BN frozen into affine layers (``MODEL.USE_AFFINE``, the 128-frame models)
  only ``_s`` and ``_b`` exist;
* the stem is ``conv1`` + ``res_conv1_bn``; residual block ``i`` of stage ``resK`` is
  ``resK_i`` with ``_branch2a`` / ``_branch2b`` / ``_branch2c`` (1×1×1 or 3×1×1, 1×3×3,
  1×1×1) and the projection shortcut ``_branch1``;
* the non-local block after residual block ``i`` of ``resK`` is ``nonlocal_convK_i`` with
  ``_theta``, ``_phi``, ``_g``, ``_out`` (W_z) and ``_bn`` (absent when ``NONLOCAL.USE_BN``
  is off).  The release has no concatenation instantiation; its pairwise weight ``w_f`` is
  given the name ``nonlocal_convK_i_concat_w`` here so that nlrepro's own models round-trip.

Solver state in a pickle (``*_momentum``, ``lr``, ``model_iter``) is not part of the model.
"""

from __future__ import annotations

from torch import nn

from nlrepro.models.frozen_bn import FrozenBN3d
from nlrepro.models.placement import STAGES

# Entries of a release pickle that hold solver state, not weights.
SOLVER_BLOBS = ("lr", "model_iter")
MOMENTUM_SUFFIX = "_momentum"

BN_SUFFIXES = {"weight": "_s", "bias": "_b", "running_mean": "_rm", "running_var": "_riv"}
NONLOCAL_PARTS = {"theta": "_theta", "phi": "_phi", "g": "_g", "w_z": "_out", "bn": "_bn",
                  "w_f": "_concat"}
BLOCK_PARTS = {"conv1": "_branch2a", "bn1": "_branch2a_bn", "conv2": "_branch2b",
               "bn2": "_branch2b_bn", "conv3": "_branch2c", "bn3": "_branch2c_bn",
               "downsample.0": "_branch1", "downsample.1": "_branch1_bn"}


def is_solver_state(name: str) -> bool:
    """Whether a pickle entry is solver state (ignored, never reported as unmatched)."""
    return name in SOLVER_BLOBS or name.endswith(MOMENTUM_SUFFIX)


def module_prefixes(model: nn.Module) -> dict[str, str]:
    """``{torch module path: Caffe2 prefix}`` for every module of a ``ResNet3D`` with weights."""
    out = {"conv1": "conv1", "bn1": "res_conv1_bn", "fc": "pred"}
    for stage in STAGES:
        k = stage[len("res"):]
        st = getattr(model, stage)
        for i in range(st.num_blocks):
            for part, suffix in BLOCK_PARTS.items():
                out[f"{stage}.{i}.{part}"] = f"{stage}_{i}{suffix}"
        for name, _ in st.named_children():
            if name.startswith("nl"):
                i = name[2:]
                for part, suffix in NONLOCAL_PARTS.items():
                    out[f"{stage}.{name}.{part}"] = f"nonlocal_conv{k}_{i}{suffix}"
    return out


def blob_names(model: nn.Module) -> dict[str, str]:
    """``{state_dict key: blob name}`` for every weight of ``model`` the release stores.

    BN ``num_batches_tracked`` counters have no blob (the converted model keeps its own).
    A frozen BN (``FrozenBN3d``) maps ``weight``/``bias`` to ``_s``/``_b``: the release's
    affine layers hold exactly the folded scale and shift.
    """
    prefixes = module_prefixes(model)
    out: dict[str, str] = {}
    for path, module in model.named_modules():
        if path not in prefixes:
            continue
        p = prefixes[path]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for attr, suffix in BN_SUFFIXES.items():
                out[f"{path}.{attr}"] = p + suffix
        elif isinstance(module, FrozenBN3d):
            out[f"{path}.weight"], out[f"{path}.bias"] = p + "_s", p + "_b"
        elif isinstance(module, (nn.Conv3d, nn.Linear)):
            out[f"{path}.weight"] = p + "_w"
            if module.bias is not None:
                out[f"{path}.bias"] = p + "_b"
    state = model.state_dict()
    unnamed = [k for k in state if k not in out and not k.endswith("num_batches_tracked")]
    if unnamed:  # a module this table does not know: fail loudly rather than skip weights
        raise NotImplementedError(f"no release blob name for {unnamed[:5]}")
    return out
