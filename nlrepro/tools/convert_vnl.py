"""``nlrepro convert-vnl``: the official release's Caffe2 pickles as nlrepro weights.

facebookresearch/video-nonlocal-net publishes its Kinetics models as Python 2 pickles of
``{"blobs": {name: numpy array}}`` (``lib/utils/checkpoints.py``; solver state such as
``*_momentum``, ``lr`` and ``model_iter`` may sit beside the weights).  The model they
belong to is described with the usual ``--profile`` / ``--set`` keys; every weight of that
model must be in the pickle with the same shape, or nothing is written.  The blob names are
in ``nlrepro.tools.vnl_names``.

A pickle can run code when it is loaded, and these files come from elsewhere: they are read
by an unpickler that only resolves numpy's array and scalar reconstruction (and
``_codecs.encode``, which Python 3 pickles of bytes use); any other global refuses the file.

Output: ``OUT.pt`` (a plain state dict, ``torch.load(weights_only=True)``), ``OUT.yaml`` (the
resolved config, which ``nlrepro eval OUT.pt`` reads) and ``OUT.json`` (the report: source
file and hash, blobs used, ignored and unmatched).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nlrepro.config import (ConfigError, RunConfig, add_profile_argument, add_set_argument,
                            load_config)
from nlrepro.models.frozen_bn import FrozenBN3d
from nlrepro.models.resnet3d import build_model
from nlrepro.tools.vnl_names import blob_names, is_solver_state
from nlrepro.tools.weights import save_plain, sha256
from nlrepro.utils import atomic_write_json

log = logging.getLogger(__name__)


class ConversionError(ConfigError):
    """A pickle that does not fit the configured model, or is not a release pickle."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol 5 arrays
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild numpy arrays and scalars."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: a weights pickle holds numpy arrays only"
            ) from None


def load_blobs(path: Path) -> dict[str, np.ndarray]:
    """The ``blobs`` of a release pickle (numpy arrays and solver scalars), read safely."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    with open(path, "rb") as fh:
        data = _unpickle(fh, path)
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{path}: not a release pickle (expected a dict of blobs)")
    return {str(k): v for k, v in data.items()}


def _unpickle(fh: BinaryIO, path: Path) -> Any:
    try:
        # latin1: Python 2 pickles store numpy's raw bytes as str.
        return SafeUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise ConversionError(f"{path}: {err}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ConversionError(f"{path}: not a readable pickle ({type(err).__name__}: "
                              f"{str(err)[:120]})") from None


def _folded(blobs: dict[str, np.ndarray], prefix: str, eps: float) -> tuple[np.ndarray, ...]:
    """BN blobs ``prefix_{s,b,rm,riv}`` folded into a frozen BN's scale and shift."""
    s, b, rm, riv = (blobs[prefix + sfx].astype(np.float64) for sfx in ("_s", "_b", "_rm", "_riv"))
    scale = s / np.sqrt(riv + eps)
    return scale, b - rm * scale


def convert(blobs: dict[str, np.ndarray], model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, report)`` of ``model`` filled from ``blobs``.

    Raises ``ConversionError`` listing every missing blob and every shape that differs.
    ``pred_w`` of a test-time net (a 1×1×1 conv) is accepted for the FC.  A frozen-BN model
    takes the release's affine ``_s``/``_b``; given a BN pickle (with ``_rm``/``_riv``) it
    folds the statistics in, like ``FrozenBN3d.from_bn``.
    """
    import torch

    names = blob_names(model)
    own = model.state_dict()
    frozen = {path for path, m in model.named_modules() if isinstance(m, FrozenBN3d)}
    eps = {path: m.eps for path, m in model.named_modules() if isinstance(m, FrozenBN3d)}
    state: dict[str, Any] = {}
    used: set[str] = set()
    missing, shapes = [], []
    for key, target in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = target.clone()
            continue
        blob = names[key]
        module, attr = key.rsplit(".", 1)
        prefix = blob[: -len("_s")] if blob.endswith(("_s", "_b")) else None
        if module in frozen and prefix and f"{prefix}_rm" in blobs and f"{prefix}_riv" in blobs:
            scale, shift = _folded(blobs, prefix, eps[module])
            value = scale if attr == "weight" else shift
            used.update(prefix + sfx for sfx in ("_s", "_b", "_rm", "_riv"))
        elif blob not in blobs:
            missing.append(blob)
            continue
        else:
            value = np.asarray(blobs[blob])
            used.add(blob)
        if blob == "pred_w" and value.size == target.numel():
            value = value.reshape(tuple(target.shape))
        if tuple(value.shape) != tuple(target.shape):
            shapes.append(f"{blob} {tuple(value.shape)} != {key} {tuple(target.shape)}")
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(target.dtype)
    if missing or shapes:
        hint = ""
        if any(m.endswith(("_rm", "_riv")) for m in missing):
            hint = " (an affine pickle of the 128-frame models: set model.frozen_bn=true)"
        raise ConversionError("; ".join(
            [f"{len(missing)} expected blob(s) missing: {', '.join(missing[:6])}"
             + (" ..." if len(missing) > 6 else "") + hint] * bool(missing)
            + [f"{len(shapes)} shape(s) differ: {'; '.join(shapes[:4])}"] * bool(shapes)))
    ignored = sorted(k for k in blobs if is_solver_state(k))
    unmatched = sorted(k for k in blobs if k not in used and not is_solver_state(k))
    report = {"blobs": len(blobs), "used": len(used), "ignored_solver_state": len(ignored),
              "unmatched": unmatched}
    return state, report


def convert_file(pkl: Path, cfg: RunConfig, out: Path,
                 allow_unmatched: bool = False) -> dict[str, Any]:
    """Convert ``pkl`` for the model of ``cfg``; write ``out`` (.pt), its .yaml and .json."""
    if out.suffix != ".pt":
        raise ConversionError(f"{out}: the output must be a .pt file")
    blobs = load_blobs(pkl)
    model = build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                        load_pretrained=False)
    state, report = convert(blobs, model)
    weights = [b for b in report["unmatched"] if b.endswith(("_w", "_b", "_s", "_rm", "_riv"))]
    if weights and not allow_unmatched:
        raise ConversionError(
            f"{len(weights)} weight blob(s) of the pickle have no place in the configured "
            f"model, e.g. {', '.join(weights[:4])}: the pickle holds a different network "
            "(check model.arch, model.depth, model.nonlocal.blocks); --allow-unmatched "
            "converts anyway")
    model.load_state_dict(state)
    report = {"source": str(Path(pkl).resolve()), "source_sha256": sha256(Path(pkl)),
              "output": str(out), **report}
    save_plain(state, cfg, out, out.with_suffix(".yaml"))
    atomic_write_json(out.with_suffix(".json"), report)
    return report


# ---- command line ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pickle", type=Path, metavar="MODEL.pkl",
                        help="a release pickle, e.g. i3d_nonlocal_32x2_IN_pretrain_400k.pkl")
    parser.add_argument("out", type=Path, metavar="OUT.pt",
                        help="plain state dict to write (OUT.yaml and OUT.json go beside it)")
    add_profile_argument(parser, default="kinetics")
    add_set_argument(parser, "describe the pickle's model, e.g. model.arch=i3d_3x1x1 "
                             "model.nonlocal.blocks=5")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="write the weights even when pickle weights are left unused")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.profile, sets=args.sets)
    report = convert_file(args.pickle, cfg, args.out, args.allow_unmatched)
    for blob in report["unmatched"]:
        print(f"nlrepro convert-vnl: unmatched blob {blob}", file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k != "unmatched"}
                     | {"unmatched": len(report["unmatched"])}, indent=2))
    return 0
