"""A run's identity: the part of its config that determines its result, and its hash (run id).

The run id names the run's folder (``<output_dir>/<run id>``), so it must never change for a
config that computes the same thing: ``tests/run/test_identity.py`` pins the ids of every
table's runs.
"""

from __future__ import annotations

import hashlib
import json

from nlrepro.choices import PROXY_FRAMES
from nlrepro.config import RunConfig, to_dict
from nlrepro.models.placement import compile_placement, stage_blocks_of
from nlrepro.proxy.dataset import recorded_fields
from nlrepro.proxy.pretrain import identity as frames_identity

# Keys that describe where/how a run executes, not what it computes: left out of the run id.
NON_IDENTITY_KEYS = ("output_dir", "launcher", "trainer.devices", "trainer.num_nodes",
                     "trainer.strategy", "trainer.accelerator", "trainer.threads",
                     "data.num_workers", "data.root", "data.decoder", "trainer.loggers")


def identity(cfg: RunConfig) -> dict:
    """The part of the config that determines the result (hashed into the run id)."""
    data = to_dict(cfg)
    # Hash the network that is built, not how it was asked for: (blocks, stages) become the
    # compiled placement, and the NL settings of a network without NL blocks are dropped.
    nl = cfg.model.nonlocal_
    placement = compile_placement(nl.blocks, nl.stages, stage_blocks_of(cfg.model),
                                  cfg.model.depth, fill=nl.fill_small_stages)
    data["model"]["nonlocal"].pop("fill_small_stages", None)  # the placement says it all
    data["model"]["nonlocal"] = ({**data["model"]["nonlocal"], "blocks": placement,
                                  "stages": None} if placement else {"blocks": {}})
    if data["data"].get("proxy"):
        data["data"]["proxy"] = recorded_fields(cfg.data.proxy)
    if cfg.model.pretrained == PROXY_FRAMES:
        # The run depends on the frame pre-trained weights: hash what they depend on.
        data["model"]["pretrained"] = {PROXY_FRAMES: frames_identity(cfg)}
    for key in NON_IDENTITY_KEYS:
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1], None)
    return data


def config_hash(cfg: RunConfig) -> str:
    """Stable short hash of the result-determining config: the run id."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
