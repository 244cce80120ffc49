"""``nlrepro export``: a run's network as a plain state dict plus its resolved config.

Like mmaction2's ``publish_model``: the optimiser, the schedule, the metric states and the
Lightning wrapper's ``model.`` prefix are dropped, so the file is the network alone::

    cfg = nlrepro.config.read_config("export/config.yaml")
    model = build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                        load_pretrained=False)
    model.load_state_dict(torch.load("export/model.pt", weights_only=True))

``--out DIR`` (default ``<run>/export``) receives ``model.pt`` and ``config.yaml``; ``nlrepro
eval DIR/model.pt`` reads that config.  Frozen-BN networks are exported as they are (their
affine layers), and the BN statistics are those of ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nlrepro.config import ConfigError
from nlrepro.run import rundir
from nlrepro.tools.weights import build_and_load, load_source, resolve_config, save_plain, sha256

WEIGHTS, CONFIG = "model.pt", rundir.CONFIG  # export/ reads like a run folder


def export(target: Path, out: Path | None = None) -> dict[str, Any]:
    """Write ``out/model.pt`` and ``out/config.yaml`` for a run folder or a ``.ckpt``."""
    target = Path(target)
    source = load_source(target)
    if source.kind == "state-dict":
        raise ConfigError(f"{target}: already a plain state dict; export reads a run folder "
                          "or a Lightning .ckpt")
    cfg = resolve_config(source, None, [])
    model = build_and_load(cfg, source.state_dict)  # proves the pair loads before writing
    out = Path(out) if out else (target / "export" if source.kind == "run"
                                 else target.with_name(f"{target.name}.export"))
    save_plain(model.state_dict(), cfg, out / WEIGHTS, out / CONFIG)
    return {"weights": str(out / WEIGHTS), "config": str(out / CONFIG),
            "tensors": len(source.state_dict),
            "parameters": sum(p.numel() for p in model.parameters()),
            "from": str(source.path), "sha256": sha256(out / WEIGHTS)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="RUN",
                        help="a run folder (checkpoints/last.ckpt) or a Lightning .ckpt")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for model.pt and config.yaml (default <run>/export)")


def main(args: argparse.Namespace) -> int:
    print(json.dumps(export(args.target, args.out), indent=2))
    return 0
