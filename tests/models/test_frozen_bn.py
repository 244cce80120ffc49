"""Frozen BN (Table 2g): the folded affine layers compute exactly what eval-mode BN computes."""

import copy

import pytest
import torch
from torch import nn

from nlrepro.config import load_config
from nlrepro.models.frozen_bn import FrozenBN3d, fold_bn_state_dict, freeze_bn
from nlrepro.models.resnet3d import build_model
from nlrepro.run.module import param_groups


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial γ, β, μ, σ² in every BN, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g, dtype=m.weight.dtype) + 0.5
            m.bias.data = torch.randn(c, generator=g, dtype=m.bias.dtype)
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
    return model


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.BatchNorm3d(6, eps=1e-3), nn.ReLU(),
                         nn.Conv3d(6, 4, 1), nn.BatchNorm3d(4)).double()


def proxy_model(*sets):
    cfg = load_config("proxy", sets=list(sets))
    return build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False).double()


def test_folded_layer_equals_bn_in_eval_mode():
    torch.manual_seed(0)
    net = randomise_bn(small_net()).eval()
    frozen = freeze_bn(copy.deepcopy(net))
    assert [type(m) for m in frozen] == [nn.Conv3d, FrozenBN3d, nn.ReLU, nn.Conv3d, FrozenBN3d]
    assert frozen[1].eps == 1e-3
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), net(x), rtol=1e-12, atol=1e-12)
    # The folding rule itself: scale = γ/√(σ²+ε), bias = β − μ·scale.
    bn = net[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(frozen[1].weight, scale)
    torch.testing.assert_close(frozen[1].bias, bn.bias - bn.running_mean * scale)
    # Frozen means frozen: train mode changes nothing (no batch statistics anywhere).
    torch.testing.assert_close(frozen.train()(x), net(x), rtol=1e-12, atol=1e-12)


def test_resnet3d_frozen_forward_equals_eval_forward():
    torch.manual_seed(0)
    net = randomise_bn(proxy_model("model.arch=i3d_3x1x1")).eval()
    frozen = freeze_bn(copy.deepcopy(net)).eval()
    assert not any(isinstance(m, nn.BatchNorm3d) for m in frozen.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert sum(isinstance(m, FrozenBN3d) for m in frozen.modules()) == n_bn > 10
    x = torch.randn(2, 3, 16, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), rtol=1e-10, atol=1e-10)


def test_scale_and_bias_are_trainable_and_in_the_no_decay_group():
    torch.manual_seed(0)
    frozen = freeze_bn(randomise_bn(small_net()))
    frozen(torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)).square().sum().backward()
    for layer in (frozen[1], frozen[4]):
        assert layer.weight.requires_grad and layer.bias.requires_grad
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0
    decay, no_decay = param_groups(frozen, weight_decay=1e-4, bn_weight_decay=0.0)
    ids = {id(p) for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert ids == {id(p) for i in (1, 4) for p in frozen[i].parameters()}


def test_channels_last_is_kept_and_equal():
    torch.manual_seed(0)
    layer = FrozenBN3d.from_bn(randomise_bn(nn.Sequential(nn.BatchNorm3d(5)))[0])
    x = torch.randn(2, 5, 3, 4, 6)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last_3d))
    assert y_cl.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y_cl, layer(x))


def test_wrong_input_and_untracked_bn_raise_clearly():
    layer = FrozenBN3d(4)
    with pytest.raises(ValueError, match=r"expects \(B, 4, T, H, W\), got \(2, 3, 1, 1, 1\)"):
        layer(torch.zeros(2, 3, 1, 1, 1))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        freeze_bn(nn.Sequential(nn.BatchNorm3d(4, track_running_stats=False)))


def test_config_switch_builds_frozen_model():
    model = proxy_model("model.frozen_bn=true")
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert any(isinstance(m, FrozenBN3d) for m in model.modules())


def test_bn_checkpoint_is_folded_when_loaded_into_a_frozen_model(tmp_path):
    """Table 2g starts from a 32-frame BN checkpoint: γ, β, μ, σ² must be folded, not copied."""
    torch.manual_seed(0)
    source = randomise_bn(proxy_model()).eval()
    target = proxy_model("model.frozen_bn=true").eval()
    x = torch.randn(1, 3, 16, 32, 32, dtype=torch.float64)
    state = fold_bn_state_dict(source.state_dict(), target)
    assert not any(k.endswith(("running_mean", "running_var")) for k in state)
    result = target.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-10, atol=1e-10)

    # The same through the training entry point that loads `trainer.init_from`.
    from nlrepro.run.train import _init_from

    fresh = proxy_model("model.frozen_bn=true").eval()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    _init_from(fresh, str(path), False)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), source(x), rtol=1e-10, atol=1e-10)
