"""Run ids never change: runs already in ``results/`` must still be found.

``tests/fixtures/run_ids.json`` holds the id of every run of every table and profile, as
``nlrepro sweep`` expands them with ``--results results`` (Table 2g's ids depend on that path:
they hash the 2f checkpoint they start from).  A change to the config schema, the placement
rule, the proxy records or the hash itself shows here first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlrepro.config import load_config
from nlrepro.run.identity import config_hash, identity
from nlrepro.sweep import expand, grid_path, load_grid

IDS = json.loads((Path(__file__).parent.parent / "fixtures" / "run_ids.json").read_text())


@pytest.mark.parametrize("key", sorted(IDS))
def test_every_tables_run_ids_are_unchanged(key):
    profile, table = key.split("/")
    specs = expand(load_grid(grid_path(table)), profile, Path("results"))
    assert [s.run_id for s in specs] == IDS[key]


def test_identity_leaves_out_where_a_run_executes():
    cfg = load_config("proxy")
    ident = identity(cfg)
    assert "output_dir" not in ident and "launcher" not in ident
    assert "root" not in ident["data"] and "num_workers" not in ident["data"]
    assert config_hash(cfg) == config_hash(load_config("proxy", sets=["data.root=/elsewhere"]))


def test_adamw_eps_enters_the_run_id_only_when_it_matters():
    """The default eps (and any eps under SGD) leaves earlier run ids unchanged."""
    base = load_config("proxy", sets=["optim.optimizer=adamw"])
    assert "eps" not in identity(base)["optim"]
    same = load_config("proxy", sets=["optim.optimizer=adamw", "optim.eps=1.0e-8"])
    assert config_hash(same) == config_hash(base)
    other = load_config("proxy", sets=["optim.optimizer=adamw", "optim.eps=1.0e-4"])
    assert identity(other)["optim"]["eps"] == 1e-4 and config_hash(other) != config_hash(base)
    sgd = load_config("proxy", sets=["optim.optimizer=sgd"])
    sgd_eps = load_config("proxy", sets=["optim.optimizer=sgd", "optim.eps=1.0e-4"])
    assert config_hash(sgd_eps) == config_hash(sgd)


def test_embed_hold_enters_the_run_id_only_when_it_holds_something():
    """No hold (the default) leaves earlier run ids unchanged; a hold is another run, except
    for a network without NL blocks, which has nothing to hold (C2D and I3D are reused)."""
    base = load_config("relations", sets=["model.nonlocal.blocks=1"])
    assert "embed_hold_epochs" not in identity(base)["optim"]
    held = load_config("relations", sets=["model.nonlocal.blocks=1",
                                          "optim.embed_hold_epochs=1.0"])
    assert identity(held)["optim"]["embed_hold_epochs"] == 1.0
    assert config_hash(held) != config_hash(base)
    c2d = load_config("relations", sets=["model.nonlocal.blocks=0"])
    c2d_held = load_config("relations", sets=["model.nonlocal.blocks=0",
                                              "optim.embed_hold_epochs=1.0"])
    assert config_hash(c2d_held) == config_hash(c2d)


def test_a_hold_for_one_instantiation_leaves_the_others_run_ids():
    """optim.embed_hold_instantiations: the hold enters the id of a run whose instantiation
    it lists, and only then; the list itself never does (a network has one instantiation)."""
    hold = ["optim.embed_hold_epochs=1.0", "optim.embed_hold_instantiations=[concatenation]"]
    for inst, held_changes in (("concatenation", True), ("embedded_gaussian", False),
                               ("dot_product", False)):
        one = [f"model.nonlocal.instantiation={inst}", "model.nonlocal.blocks=1"]
        base = load_config("relations", sets=one)
        held = load_config("relations", sets=one + hold)
        assert (config_hash(held) != config_hash(base)) == held_changes, inst
        assert "embed_hold_instantiations" not in identity(held)["optim"]
    every = load_config("relations", sets=["model.nonlocal.instantiation=concatenation",
                                           "model.nonlocal.blocks=1",
                                           "optim.embed_hold_epochs=1.0"])
    only = load_config("relations", sets=["model.nonlocal.instantiation=concatenation",
                                          "model.nonlocal.blocks=1"] + hold)
    assert config_hash(every) == config_hash(only)  # the same computation, the same run
    timeline = load_config("timeline")  # round 3: only concatenation's f is held
    assert timeline.optim.embed_hold_epochs == 1.0
    assert timeline.optim.embed_hold_instantiations == ["concatenation"]


def test_a_run_that_loads_its_blocks_holds_nothing_so_its_id_has_no_hold():
    parent = ["model.nonlocal.blocks=1", "trainer.init_from=parent/last.ckpt"]
    held = load_config("relations", sets=parent + ["optim.embed_hold_epochs=1.0"])
    assert config_hash(held) == config_hash(load_config("relations", sets=parent))
