"""Where a model's weights and config come from: a run folder, a Lightning ``.ckpt`` or a
plain ``.pt`` state dict; and how a plain one is written.

A plain weights file ``W.pt`` holds ``model.state_dict()`` of a ``ResNet3D`` (no optimiser,
no ``model.`` prefix of the Lightning wrapper) and loads with ``torch.load(weights_only=True)``.
Its config is the YAML next to it: ``W.yaml`` (what ``convert-vnl`` writes), else
``config.yaml`` in the same folder (what ``export`` writes, as a run folder does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlrepro.config import (ConfigError, RunConfig, from_dict, load_config, merge, parse_set,
                            save_config)
from nlrepro.models.resnet3d import build_model
from nlrepro.run import rundir

CKPT = Path(rundir.CKPT_DIR) / rundir.LAST
WRAPPER_PREFIX = "model."  # VideoClassifier keeps the network in ``self.model``
COMPILED_PREFIX = "_orig_mod."  # what torch.compile (trainer.compile) puts in front


@dataclass
class Source:
    """Weights to evaluate or export, with where they and their config came from."""

    kind: str                      # "run", "lightning-ckpt" or "state-dict"
    path: Path                     # the file the weights were read from
    state_dict: dict[str, Any]
    config: dict | None            # the config stored with the weights, if any
    config_path: Path | None

    def provenance(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path.resolve()),
                "sha256": sha256(self.path),
                "config_from": str(self.config_path) if self.config_path else None}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: not a readable PyTorch file ({first[:160]})") from None


def model_state(checkpoint_state: dict[str, Any]) -> dict[str, Any]:
    """The network's weights of a ``VideoClassifier`` state dict, without the wrapper prefix
    (metric states and anything else of the wrapper are left out)."""
    out = {k[len(WRAPPER_PREFIX):]: v for k, v in checkpoint_state.items()
           if k.startswith(WRAPPER_PREFIX)}
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in out.items()}


def sidecar_config(weights: Path) -> Path | None:
    for candidate in (weights.with_suffix(".yaml"), weights.parent / rundir.CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_source(target: Path) -> Source:
    """Read a run folder, a ``.ckpt`` or a plain ``.pt``; ``ConfigError`` for anything else."""
    target = Path(target)
    if target.is_dir():
        ckpt, cfg_path = target / CKPT, target / rundir.CONFIG
        if not cfg_path.is_file() or not ckpt.is_file():
            raise ConfigError(f"{target}: not a run folder with config.yaml and {CKPT} "
                              "(give a run folder, a .ckpt or a .pt file)")
        state = _torch_load(ckpt)
        return Source("run", ckpt, model_state(state["state_dict"]),
                      yaml.safe_load(cfg_path.read_text()), cfg_path)
    if not target.is_file():
        raise ConfigError(f"{target}: no such run folder or weights file")
    state = _torch_load(target)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        config = (state.get("hyper_parameters") or {}).get("config")
        return Source("lightning-ckpt", target, model_state(state["state_dict"]), config,
                      target if config else None)
    if isinstance(state, dict) and state and all(hasattr(v, "shape") for v in state.values()):
        cfg_path = sidecar_config(target)
        config = yaml.safe_load(cfg_path.read_text()) if cfg_path else None
        return Source("state-dict", target, dict(state), config, cfg_path)
    raise ConfigError(f"{target}: neither a Lightning checkpoint nor a plain state dict")


def resolve_config(source: Source, profile: str | None, sets: list[str]) -> RunConfig:
    """The source's own config (or ``profile`` when it has none) with ``sets`` on top."""
    if source.config is None:
        if profile is None:
            raise ConfigError(f"{source.path}: no config next to it ({source.path.stem}.yaml "
                              "or config.yaml); give --profile and the model's --set keys")
        return load_config(profile, sets=sets)
    if profile is not None and profile != source.config.get("profile"):
        raise ConfigError(f"--profile {profile}: {source.path} comes with its own config "
                          f"(profile {source.config.get('profile')!r}); change it with --set")
    return from_dict(merge(source.config, parse_set(sets)))


def build_and_load(cfg: RunConfig, state_dict: dict[str, Any]) -> Any:
    """``build_model`` for ``cfg`` (no ImageNet file is read) with ``state_dict`` loaded
    strictly; a mismatch is a ``ConfigError`` naming the first differing keys."""
    model = build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                        load_pretrained=False)
    check_keys(model.state_dict(), state_dict)
    model.load_state_dict(state_dict)
    return model


def check_keys(own: dict[str, Any], given: dict[str, Any]) -> None:
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(k for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{name} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("shape differs", shapes)) if keys]
        raise ConfigError("the weights do not fit the configured model: " + "; ".join(parts)
                          + " (check model.arch, model.depth, model.nonlocal.* and "
                          "model.frozen_bn)")


def save_plain(state_dict: dict[str, Any], cfg: RunConfig, weights: Path,
               config_path: Path) -> None:
    """Write ``state_dict`` (tensors only, contiguous, on the CPU) and its resolved config."""
    import torch

    weights.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = weights.with_name(f".{weights.name}.tmp")
    torch.save(plain, tmp)
    tmp.replace(weights)
    save_config(cfg, config_path)
