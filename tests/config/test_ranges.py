"""Every range rule refuses its bad value before anything runs, naming key, value and range."""

from __future__ import annotations

import pytest

from nlrepro.cli import main as cli
from nlrepro.config import ConfigError, load_config

TINY = ["data.proxy.num_train=16", "data.proxy.num_val=8", "data.proxy.num_test=8",
        "data.proxy.pretrain_images=16", "data.proxy.pretrain_epochs=1", "trainer.threads=1"]
# (key, bad value) per rule; a value the type check lets through, so the range check decides.
BAD = {
    "seed": -1, "model.num_classes": 0, "model.width": 0, "model.stem_kernel": 0,
    "model.stem_stride": 0, "model.stem_temporal_stride": 0, "model.dropout": 1.0,
    "model.stage_blocks": [1, 0, 3, 1], "model.nonlocal.bn_init_gamma": float("nan"),
    "model.nonlocal.concat_offset": float("inf"),
    "data.batch_size": 0, "data.num_workers": -1, "data.max_retries": -1, "data.frames": 0,
    "data.stride": 0, "data.crop": 0, "data.train_scale": [0, 32], "data.test_scale": 0,
    "data.test_crop": 0, "data.num_clips": 0, "data.num_crops": 0,
    "data.mean": float("inf"), "data.std": 0.0, "optim.lr": -1.0, "optim.momentum": 1.0,
    "optim.weight_decay": -0.1, "optim.bn_weight_decay": -1.0, "optim.gamma": 0.0, "optim.eps": 0.0,
    "optim.warmup_epochs": -0.5, "optim.embed_hold_epochs": -1.5, "trainer.max_epochs": 0,
    "trainer.max_steps": 0,
    "trainer.devices": 0, "trainer.num_nodes": 0, "trainer.threads": -1,
    "trainer.log_every_n_steps": 0, "trainer.check_val_every_n_epoch": 0,
    "trainer.limit_train_batches": 0, "trainer.limit_val_batches": 1.5,
    "trainer.limit_test_batches": -1, "trainer.precise_bn_batches": -1,
    "launcher.local_workers": 0,
}


def test_every_rule_has_a_bad_value_here():
    from nlrepro.config.ranges import RULES

    assert sorted(BAD) == sorted(key for key, _ in RULES)


@pytest.mark.parametrize("key", sorted(BAD))
def test_each_rule_names_key_value_and_range(key):
    from nlrepro.config.ranges import RULES

    value = BAD[key]
    allowed = dict(RULES)[key][1]
    with pytest.raises(ConfigError) as err:
        load_config("proxy", overrides={key: value})
    message = str(err.value)
    assert message.startswith(f"{key}: {value!r} is not valid"), message
    assert allowed in message


@pytest.mark.parametrize("sets, message", [
    (["data.batch_size=-3"], "data.batch_size: -3 is not valid; give an integer >= 1"),
    (["optim.lr=-1"], "optim.lr: -1.0 is not valid; give a finite number > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs: 0 is not valid; give an integer >= 1"),
    (["model.num_classes=3"], "model.num_classes: 3 is not valid for the proxy data; give 4"),
    (["data.frames=1"], "data.frames: 1 is too short: pool2 needs at least 2 frames"),
])
def test_the_reported_values_are_refused_with_the_rule(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("proxy", sets=sets)


def test_a_crop_too_small_for_the_stem_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config("kinetics", sets=["data.crop=4", "data.train_scale=[4, 8]"])
    assert str(err.value).startswith("data.crop: 4 is too small for the network")
    assert "give at least 5" in str(err.value)
    load_config("kinetics", sets=["data.crop=5", "data.train_scale=[5, 8]"])  # the least fits


def test_a_valid_default_passes_every_rule():
    for profile in ("proxy", "kinetics"):
        load_config(profile)


@pytest.mark.parametrize("bad", ["data.batch_size=0", "trainer.max_epochs=0",
                                 "model.num_classes=0", "optim.lr=-1"])
def test_train_refuses_before_writing_anything(tmp_path, capsys, bad):
    """No run folder, no data, no cached backbone: nothing ran."""
    sets = [*TINY, f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'out'}", bad]
    code = cli(["train", *(arg for s in sets for arg in ("--set", s))])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad.split("=")[0] in err[0], err
    assert list(tmp_path.iterdir()) == []
