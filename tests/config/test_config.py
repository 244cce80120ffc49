"""Config: profiles load, overrides apply, bad input fails early with a clear message."""

import pytest

from nlrepro.config import (ConfigError, load_config, merge, parse_set, read_config,
                            save_config, to_dict)
from nlrepro.run.identity import config_hash


def test_profiles_load_and_validate():
    for profile in ("proxy", "kinetics"):
        cfg = load_config(profile)
        assert cfg.profile == profile
    assert load_config("kinetics").data.frames == 32


def test_a_profile_extends_another_and_runs_its_grids(tmp_path, monkeypatch):
    """relations extends proxy: its own keys win, the rest is the proxy's, and grids key its
    seeds by the family (proxy); a loop in 'extends' is one clear error."""
    from nlrepro.config import load as load_module
    from nlrepro.config import profile_family
    from nlrepro.sweep.grid import expand, grid_path, load_grid, seeds_for

    rel, proxy = load_config("relations"), load_config("proxy")
    assert rel.profile == "relations" and profile_family("relations") == "proxy"
    assert rel.data.proxy.task == "relations" and proxy.data.proxy.task == "cuematch"
    assert rel.model.stage_blocks == [1, 4, 6, 1] and rel.optim == proxy.optim
    assert rel.model.nonlocal_.bn_init_gamma == proxy.model.nonlocal_.bn_init_gamma
    grid = load_grid(grid_path("2g"))
    assert seeds_for(grid, "relations") == seeds_for(grid, "proxy") == [0, 1, 2]
    specs = expand(grid, "relations", tmp_path)
    assert {s.config.data.root for s in specs} == {"data/relations-long"}
    assert all(str(s.run_dir).startswith(str(tmp_path / "relations" / "2g")) for s in specs)
    for name, parent in (("a", "b"), ("b", "a")):
        (tmp_path / f"{name}.yaml").write_text(f"extends: {parent}\n")
    monkeypatch.setattr(load_module, "PROFILE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"profile 'a': 'extends' loops \(a -> b -> a\)"):
        load_config("a")


def test_set_overrides_use_yaml_scalars_not_eval():
    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1", "optim.lr=0.5",
                                     "model.nonlocal.stages=[res3]"])
    assert cfg.model.nonlocal_.blocks == 1 and cfg.optim.lr == 0.5
    assert cfg.model.nonlocal_.stages == ["res3"]
    # A value that looks like code stays a string and then fails type checking.
    with pytest.raises(ConfigError, match="model.depth"):
        load_config("proxy", sets=["model.depth=__import__('os').getcwd()"])


def test_exponent_numbers_without_a_dot_are_numbers():
    """PyYAML reads 1e-4 as a string (YAML 1.1 wants 1.0e-4); a float key still takes it."""
    cfg = load_config("proxy", sets=["optim.lr=1e-3", "optim.eps=1E-4", "optim.momentum=.9e0"])
    assert (cfg.optim.lr, cfg.optim.eps, cfg.optim.momentum) == (1e-3, 1e-4, 0.9)
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got '1e-3x'"):
        load_config("proxy", sets=["optim.lr=1e-3x"])
    with pytest.raises(ConfigError, match="trainer.max_epochs: expected an integer, got '1e2'"):
        load_config("proxy", sets=["trainer.max_epochs=1e2"])


@pytest.mark.parametrize("item, words", [
    ("model.arch=c3d", ["model.arch", "'c3d'", "i3d_3x1x1"]),
    ("model.nonlocal.instantiation=softmax", ["instantiation", "'softmax'", "dot_product"]),
    ("model.nonlocal.scope=global", ["scope", "'global'", "spacetime"]),
    ("model.depth=34", ["model.depth", "34", "101"]),
    ("model.widht=8", ["unknown key", "model.widht", "width"]),
    ("optim.lr=fast", ["optim.lr", "'fast'"]),
    ("model.nonlocal.stages=[res6]", ["res6", "res5"]),
    ("optim.embed_hold_instantiations=[concat]",
     ["embed_hold_instantiations", "'concat'", "concatenation"]),
])
def test_bad_values_name_key_value_and_choices(item, words):
    with pytest.raises(ConfigError) as err:
        load_config("proxy", sets=[item])
    for word in words:
        assert word in str(err.value)


def test_impossible_combinations_fail_before_running():
    with pytest.raises(ConfigError, match="time"):
        load_config("proxy", sets=["data.frames=1", "model.nonlocal.blocks=1",
                                   "model.nonlocal.scope=time"])
    with pytest.raises(ValueError, match="10"):
        load_config("proxy", sets=["model.stage_blocks=[1,2,3,1]", "model.nonlocal.blocks=10",
                                   "model.nonlocal.fill_small_stages=false"])
    with pytest.raises(ConfigError, match="unknown profile 'laptop'"):
        load_config("laptop")


def test_hash_ignores_where_it_runs_but_not_what_it_computes(tmp_path):
    a = load_config("proxy")
    b = load_config("proxy", sets=["output_dir=/elsewhere", "data.num_workers=3"])
    c = load_config("proxy", sets=["seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    save_config(c, tmp_path / "c.yaml")
    assert to_dict(read_config(tmp_path / "c.yaml")) == to_dict(c)


def test_merge_and_parse_set():
    assert parse_set(["a.b=1", "c=[1, 2]", "d=null"]) == {"a.b": 1, "c": [1, 2], "d": None}
    assert merge({"a": {"b": 1, "c": 2}}, {"a.b": 3}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["novalue"])


def test_stage_blocks_keyed_by_depth_resolve_to_the_runs_depth(tmp_path):
    """The proxy profile's R101 is deeper than its R50 (a mapping by depth); a run's config
    holds the plain list of its depth, so the R50 hash equals the one of that list given
    directly, and the saved config reads back."""
    r50 = load_config("proxy")
    r101 = load_config("proxy", sets=["model.depth=101"])
    assert r50.model.stage_blocks == [1, 2, 3, 1]
    assert r101.model.stage_blocks == [1, 2, 6, 1]
    assert config_hash(r50) == config_hash(load_config(
        "proxy", sets=["model.stage_blocks=[1, 2, 3, 1]"])) != config_hash(r101)
    save_config(r101, tmp_path / "r101.yaml")
    assert read_config(tmp_path / "r101.yaml").model.stage_blocks == [1, 2, 6, 1]
    # A mapping given on the command line replaces the profile's, keys as YAML gives them.
    one = load_config("proxy", sets=["model.stage_blocks={50: [1, 1, 1, 1]}"])
    assert one.model.stage_blocks == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match=r"no entry for model.depth=101.*depths \[50\]"):
        load_config("proxy", sets=["model.stage_blocks={50: [1, 1, 1, 1]}", "model.depth=101"])
    with pytest.raises(ConfigError, match="key a mapping by depth"):
        load_config("proxy", sets=["model.stage_blocks={deep: [1, 1, 1, 1]}"])


def test_profile_option_defaults_to_the_default_profile_and_names_every_profile():
    """add_profile_argument: one --profile for every command, its choices in --help."""
    import argparse

    from nlrepro.choices import DEFAULT_PROFILE
    from nlrepro.config import add_profile_argument, list_profiles

    parser = argparse.ArgumentParser()
    add_profile_argument(parser)
    assert parser.parse_args([]).profile == DEFAULT_PROFILE
    assert parser.parse_args(["--profile", "proxy"]).profile == "proxy"
    text = parser.format_help().replace("\n", " ")
    assert f"default: {DEFAULT_PROFILE}" in " ".join(text.split())
    assert all(name in text for name in list_profiles()) and "kinetics" in list_profiles()
    bare = argparse.ArgumentParser()
    add_profile_argument(bare, "profile for a .pt without a config", default=None)
    assert bare.parse_args([]).profile is None and "default:" not in bare.format_help()
