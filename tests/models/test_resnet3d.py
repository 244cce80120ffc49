"""The backbones of Table 1: shapes, temporal kernels, head, NL insertion, memory format."""

import pytest
import torch
import torchvision
from torch import nn

from nlrepro.config import load_config
from nlrepro.models.resnet3d import Bottleneck, ResNet3D, build_model

R50_STAGES = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}


def kinetics(*sets):
    return load_config("kinetics", sets=list(sets))


# A narrow net pinned here (not read from the proxy profile, which may change).
NARROW = ["model.stage_blocks=[1,2,3,1]", "model.width=8", "model.stem_kernel=3",
          "model.stem_stride=2", "model.stem_temporal_stride=1", "model.stem_pool=false",
          "model.num_classes=4", "data.frames=16", "data.crop=32", "model.pretrained=null",
          "model.nonlocal.bn_init_gamma=0.0"]


def proxy(*sets):
    return load_config("proxy", sets=[*NARROW, *sets])


def meta_model(cfg, **kw):
    with torch.device("meta"):
        return build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False, **kw)


def temporal_kernels(model: ResNet3D, conv: str) -> dict[str, list[int]]:
    return {s: [getattr(stage, str(i)).__getattr__(conv).kernel_size[0]
                for i in range(stage.num_blocks)] for s, stage in model.stages().items()}


@pytest.mark.parametrize("arch", ["c2d", "i3d_3x1x1", "i3d_3x3x3"])
def test_feature_sizes_at_32x224(arch):
    """VNL: conv1 16×112² → pool1 8×55² → res2 8×55² → pool2 4×55² → res3..res5."""
    model = meta_model(kinetics(f"model.arch={arch}"))
    feats = model.forward_features(torch.zeros(2, 3, 32, 224, 224, device="meta"))
    got = {k: tuple(v.shape[1:]) for k, v in feats.items()}
    assert got == {"conv1": (64, 16, 112, 112), "pool1": (64, 8, 55, 55),
                   "res2": (256, 8, 55, 55), "pool2": (256, 4, 55, 55),
                   "res3": (512, 4, 28, 28), "res4": (1024, 4, 14, 14),
                   "res5": (2048, 4, 7, 7)}
    assert model.temporal_sizes(32) == {k: v[1] for k, v in got.items()}
    assert model(torch.zeros(2, 3, 32, 224, 224, device="meta")).shape == (2, 400)


def test_c2d_r50_is_torchvision_resnet50_with_1x_kernels():
    """Same parameter count as the 2D ResNet-50 (1000 classes); every conv after conv1 is 1×k×k."""
    model = meta_model(kinetics("model.num_classes=1000"))
    ref = torchvision.models.resnet50()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == len([m for m in ref.modules() if isinstance(m, nn.Conv2d)])
    assert all(c.kernel_size[0] == 1 for c in convs)
    assert model.conv1.stride == (2, 2, 2) and model.conv1.padding == (0, 3, 3)
    assert (model.pool1.kernel_size, model.pool1.stride, model.pool1.padding) == \
        ((2, 3, 3), (2, 2, 2), 0)
    assert (model.pool2.kernel_size, model.pool2.stride) == ((2, 1, 1), (2, 1, 1))
    # Stride on the 3×3 conv; projection shortcut where the shape changes.
    first = model.res3._modules["0"]
    assert first.conv2.stride == (1, 2, 2) and first.conv1.stride == (1, 1, 1)
    assert first.downsample is not None and model.res3._modules["1"].downsample is None


def test_i3d_3x1x1_temporal_kernels_follow_vnl():
    r50 = meta_model(kinetics("model.arch=i3d_3x1x1"))
    assert temporal_kernels(r50, "conv1") == {"res2": [3, 3, 3], "res3": [3, 1, 3, 1],
                                              "res4": [3, 1, 3, 1, 3, 1], "res5": [1, 3, 1]}
    assert all(k == 1 for ks in temporal_kernels(r50, "conv2").values() for k in ks)
    assert r50.conv1.kernel_size == (5, 7, 7) and r50.conv1.padding == (2, 3, 3)
    block = r50.res2._modules["0"]
    assert block.conv1.padding == (1, 0, 0)
    r101 = meta_model(kinetics("model.arch=i3d_3x1x1", "model.depth=101"))
    res4 = temporal_kernels(r101, "conv1")["res4"]
    assert res4 == [3 if i % 2 == 0 else 1 for i in range(23)] and res4.count(3) == 12


def test_i3d_3x3x3_inflates_the_3x3_conv_in_the_same_blocks():
    a = meta_model(kinetics("model.arch=i3d_3x1x1"))
    b = meta_model(kinetics("model.arch=i3d_3x3x3"))
    assert temporal_kernels(b, "conv2") == temporal_kernels(a, "conv1")
    assert all(k == 1 for ks in temporal_kernels(b, "conv1").values() for k in ks)
    assert b.res2._modules["0"].conv2.padding == (1, 1, 1)
    assert b.conv1.kernel_size == (5, 7, 7)


def test_narrow_proxy_variant_and_its_temporal_pattern():
    model = meta_model(proxy("model.arch=i3d_3x1x1"))
    assert [s.num_blocks for s in model.stages().values()] == [1, 2, 3, 1]
    assert model.conv1.out_channels == 8 and model.feature_channels == 8 * 8 * 4
    assert model.conv1.kernel_size == (5, 3, 3) and model.conv1.stride == (1, 2, 2)
    assert isinstance(model.pool1, nn.Identity)
    # The parity rule on (1,2,3,1): res5's single block (index 0) gets no temporal kernel.
    assert temporal_kernels(model, "conv1") == {"res2": [3], "res3": [3, 1], "res4": [3, 1, 3],
                                                "res5": [1]}


def test_fully_convolutional_test_equals_fc_after_average_pooling():
    torch.manual_seed(0)
    cfg = proxy()
    model = build_model(cfg.model, frames=16, crop=32).eval()
    for m in model.modules():   # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    calls = []
    dense = model.dense_logits
    model.dense_logits = lambda f: calls.append(f.shape) or dense(f)
    x = torch.randn(2, 3, 16, 48, 48)
    with torch.no_grad():
        got = model(x)
        feats = model.features(x)
        want = feats.mean(dim=(2, 3, 4)) @ model.fc.weight.T + model.fc.bias
        small = model(x[..., :32, :32])
    assert calls == [feats.shape]          # the 48² input took the per-position path
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(calls) == 1                 # the training-size input did not
    assert small.shape == (2, cfg.model.num_classes)


def test_dropout_sits_before_the_fc_and_only_in_training():
    torch.manual_seed(0)
    model = build_model(proxy("model.dropout=0.5").model, frames=16)
    seen = []
    model.fc.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 16, 32, 32)
    model.train()
    model(x)
    pooled = model.features(x).mean(dim=(2, 3, 4))
    zeroed = seen[0] == 0
    assert zeroed.any()  # dropout zeroes pooled features (ReLU outputs are > 0 on average)
    torch.testing.assert_close(seen[0][~zeroed], 2 * pooled[~zeroed], rtol=1e-4, atol=1e-5)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_train_step_and_channels_last_3d():
    torch.manual_seed(0)
    model = build_model(proxy("model.arch=i3d_3x3x3", "model.nonlocal.blocks=1",
                              "model.nonlocal.stages=[res3]").model, frames=16)
    for block in model.nonlocal_blocks().values():   # γ = 1: make the NL block do something
        for m in block.modules():
            if isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
    x = torch.randn(2, 3, 16, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    cl = model.to(memory_format=torch.channels_last_3d)
    assert cl.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        got = cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    cl.train()
    loss = nn.functional.cross_entropy(cl(x), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in cl.parameters())


def test_init_follows_vnl():
    torch.manual_seed(0)
    model = build_model(kinetics("model.pretrained=null").model, frames=32)
    assert model.fc.bias.abs().max() == 0 and abs(model.fc.weight.std() - 0.01) < 1e-3
    bn3 = [m.bn3.weight for m in model.modules() if isinstance(m, Bottleneck)]
    assert all(bool((w == 1).all()) for w in bn3)
    w = model.res4._modules["0"].conv2.weight   # He normal, fan_out = 256 * 3 * 3
    assert abs(w.std().item() - (2 / (256 * 9)) ** 0.5) < 2e-3
    zero = ResNet3D(stage_blocks={"res2": 1, "res3": 1, "res4": 1, "res5": 1}, width=8,
                    zero_init_residual=True)
    assert all(bool((m.bn3.weight == 0).all()) for m in zero.modules()
               if isinstance(m, Bottleneck))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"'c3d'.*'c2d', 'i3d_3x1x1', 'i3d_3x3x3'"):
        ResNet3D(arch="c3d")
    with pytest.raises(ValueError, match="data.frames: 2 is too short.*pool1"):
        meta_model(kinetics("data.frames=2"))
    # 128 frames: res3 sees 16, so groups of 3 do not divide it (groups of 4 are used below).
    with pytest.raises(ValueError, match="res3=3 does not divide the 16 frames"):
        meta_model(kinetics("data.frames=128", "model.nonlocal.blocks=5",
                            "model.nonlocal.temporal_groups={res3: 3}"))


# ---- with non-local blocks (nlrepro/models/non_local.py) ------------------------------------
def test_nonlocal_blocks_sit_after_the_right_residual_blocks():
    non_local = pytest.importorskip("nlrepro.models.non_local")
    cfg = kinetics("model.depth=101", "model.nonlocal.blocks=5", "model.nonlocal.fast=false",
                   "data.frames=128", "model.nonlocal.temporal_groups={res3: 4}")
    model = meta_model(cfg)
    blocks = model.nonlocal_blocks()
    assert list(blocks) == ["res3.1", "res3.3", "res4.6", "res4.13", "res4.20"]
    assert all(isinstance(b, non_local.NonLocalBlock) and b.fast is False
               for b in blocks.values())
    assert [b.temporal_group for b in blocks.values()] == [4, 4, None, None, None]
    # Forward order: the NL block right after residual block res3.1 consumes its output.
    order = []
    for name, m in [("res3.1", model.res3._modules["1"]), ("res3.2", model.res3._modules["2"]),
                    ("nl", blocks["res3.1"])]:
        m.register_forward_hook(lambda mod, i, o, name=name: order.append((name, o.shape)))
    model.res3(torch.zeros(1, 256, 16, 32, 32, device="meta"))
    assert [n for n, _ in order] == ["res3.1", "nl", "res3.2"]


def test_fresh_nonlocal_blocks_leave_the_network_unchanged():
    """W_z's BN starts at γ = 0: inserting NL blocks into a trained net changes nothing."""
    pytest.importorskip("nlrepro.models.non_local")
    torch.manual_seed(0)
    plain = build_model(proxy().model, frames=16).eval()
    with_nl = build_model(proxy("model.nonlocal.blocks=5").model, frames=16).eval()
    missing, unexpected = with_nl.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".nl" in k for k in missing)
    x = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_nl(x), plain(x))
    assert list(with_nl.nonlocal_blocks()) == ["res3.0", "res3.1", "res4.0", "res4.1",
                                               "res4.2"]


def test_frozen_bn_is_applied_after_the_weights(tmp_path):
    """BN becomes the affine map of the *loaded* statistics (128-frame recipe, Table 2g)."""
    torch.manual_seed(0)
    net2d = torchvision.models.resnet50().eval()
    net2d.bn1.running_var.fill_(4.0)
    torch.save(net2d.state_dict(), tmp_path / "r50.pth")
    cfg = kinetics("model.frozen_bn=true", f"model.pretrained={tmp_path / 'r50.pth'}").model
    model = build_model(cfg, frames=32)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    torch.testing.assert_close(model.bn1.weight, torch.full((64,), 0.5), rtol=1e-5, atol=0)
