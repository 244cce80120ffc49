"""Precise BN: running mean/var become the exact statistics of the activations of N batches.

Definition tested (VNL ``bn_helper.py``): running_mean = mean and running_var = unbiased
variance of the concatenation of everything the layer saw, per channel.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlrepro.models.frozen_bn import freeze_bn
from nlrepro.run.precise_bn import update_bn_stats


def concat_stats(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: per-channel mean and unbiased variance of the concatenated batches."""
    flat = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in xs], dim=1)
    return flat.mean(dim=1), flat.var(dim=1, unbiased=True)


def batches(sizes, channels=3, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    # Different offsets per batch: the between-batch spread must be in the variance.
    return [torch.randn(n, channels, 2, 3, 4, generator=g, dtype=torch.float64) * (1 + i)
            + 3.0 * i + shift for i, n in enumerate(sizes)]


@pytest.mark.parametrize("training", [True, False])
def test_single_layer_gets_the_concatenated_statistics(training):
    bn = nn.BatchNorm3d(3, momentum=0.1).double().train(training)
    xs = batches([2, 5, 3])
    mean, var = concat_stats(xs)
    assert update_bn_stats(bn, iter(xs), num_batches=3) == 3
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
    # Not the average of per-batch variances (fvcore's definition): that one is much smaller.
    per_batch = torch.stack([x.transpose(0, 1).reshape(3, -1).var(dim=1) for x in xs]).mean(0)
    assert (bn.running_var > 1.5 * per_batch).all()
    assert bn.momentum == 0.1 and bn.training is training
    assert int(bn.num_batches_tracked) == 0


def test_only_running_stats_change_and_deeper_layers_see_normalised_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4, momentum=None), nn.ReLU(),
                          nn.Dropout(0.5), nn.Conv3d(4, 2, 1), nn.BatchNorm3d(2)).double()
    model[1].num_batches_tracked.fill_(7)
    before = copy.deepcopy(model.state_dict())
    xs = batches([2, 2, 2, 2], seed=1)
    used = update_bn_stats(model, xs, num_batches=3)  # a list: only the first 3 are used
    assert used == 3 and model.training and model[3].training
    assert model[1].momentum is None and model[5].momentum == 0.1

    # Reference: BN1 normalises each batch with its own statistics (train mode), dropout is off.
    conv1, bn1, conv2 = model[0], model[1], model[4]
    h1 = [conv1(x).detach() for x in xs[:3]]
    h2 = [conv2(F.relu(F.batch_norm(h, None, None, bn1.weight, bn1.bias, training=True,
                                    eps=bn1.eps))).detach() for h in h1]
    for bn, acts in ((model[1], h1), (model[5], h2)):
        mean, var = concat_stats(acts)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"}


def test_short_iterables_and_bad_arguments():
    bn = nn.BatchNorm3d(3).double()
    xs = batches([2, 2])
    assert update_bn_stats(bn, iter(xs), num_batches=10) == 2
    torch.testing.assert_close(bn.running_mean, concat_stats(xs)[0])
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        update_bn_stats(bn, xs, num_batches=0)
    before = bn.running_mean.clone()
    with pytest.raises(ValueError, match="yielded no batches"):
        update_bn_stats(bn, iter([]), num_batches=5)
    torch.testing.assert_close(bn.running_mean, before)
    with pytest.raises(TypeError, match="must yield tensors"):
        update_bn_stats(bn, [(xs[0], 1)], num_batches=1)


def test_models_without_running_statistics_are_left_alone():
    frozen = freeze_bn(nn.Sequential(nn.Conv3d(3, 3, 1), nn.BatchNorm3d(3)))
    assert update_bn_stats(frozen, batches([2]), num_batches=1) == 0
    assert update_bn_stats(nn.Conv3d(3, 3, 1), batches([2]), num_batches=1) == 0


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        bn = nn.BatchNorm3d(3).double()
        update_bn_stats(bn, batches([2 + rank, 3], seed=10 + rank), num_batches=2)
        torch.save({"mean": bn.running_mean, "var": bn.running_var}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_the_statistics_of_all_their_batches(tmp_path):
    """Under DDP every rank tests with one model: stats are pooled over ranks."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'pg'}"
    out = str(tmp_path / "stats")
    mp.spawn(_rank, args=(2, init, out), nprocs=2, join=True)
    mean, var = concat_stats(batches([2, 3], seed=10) + batches([3, 3], seed=11))
    for r in range(2):
        got = torch.load(f"{out}.{r}")
        torch.testing.assert_close(got["mean"], mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["var"], var, rtol=1e-12, atol=1e-12)
