"""How the samplers deal a split to DDP ranks, and the settings that ask for DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nlrepro.config import ConfigError, load_config
from nlrepro.data.samplers import EpochRandomSampler, ShardSampler
from nlrepro.run.identity import config_hash, identity


def test_two_ranks_at_half_batch_see_the_global_batches_of_one_rank() -> None:
    data, b = range(48), 16
    one = EpochRandomSampler(data, seed=3)
    ranks = [EpochRandomSampler(data, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for epoch in (0, 1):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        whole, parts = list(one), [list(s) for s in ranks]
        for k in range(len(data) // b):
            shares = [set(p[k * b // 2:(k + 1) * b // 2]) for p in parts]
            assert shares[0] | shares[1] == set(whole[k * b:(k + 1) * b])
    # One process keeps the order it always had: randperm from the (seed, epoch) key.
    key = np.random.SeedSequence([3, 1]).generate_state(1, np.uint64)[0]
    assert whole == torch.randperm(48, generator=torch.Generator().manual_seed(int(key))).tolist()


def test_training_shards_are_padded_to_equal_length() -> None:
    parts = [list(EpochRandomSampler(range(7), seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 4 and set(parts[0] + parts[1]) == set(range(7))


@pytest.mark.parametrize("n, world", [(45, 2), (45, 4), (3, 4), (16, 2)])
def test_eval_shards_cover_every_item_once(n: int, world: int) -> None:
    parts = [list(ShardSampler(range(n), num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    assert [len(ShardSampler(range(n), world, r)) for r in range(world)] == list(map(len, parts))


def test_sync_batchnorm_setting() -> None:
    plain = load_config("proxy")
    assert "sync_batchnorm" not in identity(plain)["trainer"]  # earlier run ids unchanged
    synced = load_config("proxy", sets=["trainer.sync_batchnorm=true"])
    assert config_hash(synced) != config_hash(plain)
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm: True .* model.frozen_bn"):
        load_config("proxy", sets=["trainer.sync_batchnorm=true", "model.frozen_bn=true"])
    with pytest.raises(ConfigError, match="trainer.sync_batchnorm"):
        load_config("proxy", sets=["trainer.sync_batchnorm=maybe"])


def test_sync_bn_conversion_keeps_the_parameters() -> None:
    from nlrepro.run.sync_bn import GlooSyncBatchNorm, SyncBatchNorm3d

    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    weight, mean = model[1].weight, model[1].running_mean
    plugin = GlooSyncBatchNorm()
    model = plugin.apply(model)
    assert type(model[1]) is SyncBatchNorm3d and model[1].weight is weight
    x = torch.randn(2, 3, 2, 4, 4)
    assert torch.equal(model(x), nn.functional.batch_norm(  # one process: plain BN
        model[0](x), torch.zeros(4), torch.ones(4), weight, model[1].bias, training=True))
    model = plugin.revert(model)
    assert type(model[1]) is nn.BatchNorm3d and model[1].running_mean is mean


def test_tasks_per_node_must_match_the_devices() -> None:
    from nlrepro.sweep.launch import _tasks_per_node

    cfg = load_config("proxy", sets=["trainer.devices=2", "launcher.tasks_per_node=2"])
    assert _tasks_per_node(cfg.launcher, cfg) == (2, 1)
    cfg = load_config("proxy", sets=["trainer.devices=1", "launcher.tasks_per_node=2"])
    with pytest.raises(ConfigError, match=r"launcher.tasks_per_node: 2 must equal "
                                          r"trainer.devices \(1\)"):
        _tasks_per_node(cfg.launcher, cfg)
    cfg = load_config("kinetics", sets=["launcher.tasks_per_node=16", "trainer.devices=16"])
    with pytest.raises(ConfigError, match=r"more than launcher.gpus_per_node \(8\)"):
        _tasks_per_node(cfg.launcher, cfg)
    cfg = load_config("proxy", sets=["trainer.devices=2"])  # CPU job, tasks not set
    with pytest.raises(ConfigError, match=r"trainer.devices: 2 .* launcher.tasks_per_node=2"):
        _tasks_per_node(cfg.launcher, cfg)
    cfg = load_config("kinetics", sets=["trainer.num_nodes=2"])
    assert _tasks_per_node(cfg.launcher, cfg) == (8, 2)  # 0 = one task per GPU
