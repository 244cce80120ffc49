"""ImageNet inflation: a clip of identical frames sees the 2D network, frame by frame."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from nlrepro.config import load_config
from nlrepro.models.inflate import inflate_imagenet, map_key
from nlrepro.models.resnet3d import ResNet3D, build_model
from helpers.models import randomise_bn


@pytest.fixture(scope="module")
def resnet50_2d() -> nn.Module:
    """A torchvision ResNet-50 with random weights and non-trivial BN (no download)."""
    torch.manual_seed(0)
    return randomise_bn(torchvision.models.resnet50()).eval()


def inflated(arch: str, net2d: nn.Module) -> tuple[ResNet3D, object]:
    torch.manual_seed(1)
    model = ResNet3D(arch=arch).eval()
    return model, inflate_imagenet(model, net2d.state_dict())


def in_float64(arch: str, net2d: nn.Module) -> tuple[ResNet3D, nn.Module]:
    """Both nets in float64 (inflated from float64 weights): 1e-9 agreement, not float32 noise."""
    net = copy.deepcopy(net2d).double()
    model = ResNet3D(arch=arch).double().eval()
    inflate_imagenet(model, net.state_dict())
    return model, net


def repeat(x: torch.Tensor, t: int) -> torch.Tensor:
    return x.unsqueeze(2).expand(-1, -1, t, -1, -1).contiguous()


def stem3d(m: ResNet3D, x: torch.Tensor) -> torch.Tensor:
    return m.relu(m.bn1(m.conv1(x)))


def trunk3d(m: ResNet3D, x: torch.Tensor) -> torch.Tensor:
    return m.res5(m.res4(m.res3(m.pool2(m.res2(x)))))


def stem2d(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return n.relu(n.bn1(n.conv1(x)))


def trunk2d(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return n.layer4(n.layer3(n.layer2(n.layer1(x))))


def test_key_mapping_and_report(resnet50_2d):
    assert map_key("layer1.0.downsample.1.running_var") == "res2.0.downsample.1.running_var"
    assert map_key("layer4.2.conv3.weight") == "res5.2.conv3.weight"
    assert map_key("bn1.bias") == "bn1.bias" and map_key("fc.weight") is None
    model, report = inflated("i3d_3x1x1", resnet50_2d)
    sd2d = resnet50_2d.state_dict()
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.missing == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == len(sd2d) - 2
    # Inflation rule: t copies of the 2D kernel divided by t; BN copied unchanged.
    w3, w2 = model.res2._modules["0"].conv1.weight, sd2d["layer1.0.conv1.weight"]
    assert w3.shape[2] == 3
    torch.testing.assert_close(w3, w2.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3)
    torch.testing.assert_close(model.conv1.weight.sum(dim=2), sd2d["conv1.weight"])
    torch.testing.assert_close(model.res4._modules["5"].bn3.running_var,
                               sd2d["layer3.5.bn3.running_var"])


@torch.no_grad()
def test_c2d_sees_the_2d_network_on_every_frame(resnet50_2d):
    model, net = in_float64("c2d", resnet50_2d)
    img = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    ref = stem2d(net, img)
    got = stem3d(model, repeat(img, 4))
    assert got.shape[2] == 2
    for t in range(2):
        torch.testing.assert_close(got[:, :, t], ref, rtol=1e-9, atol=1e-9)
    # Stages from the same input (the stem pools differ: VNL pads pool1 with 0, torchvision 1).
    feat = net.maxpool(ref)
    ref = trunk2d(net, feat)
    got = trunk3d(model, repeat(feat, 4))
    assert got.shape[2] == 2
    for t in range(2):
        torch.testing.assert_close(got[:, :, t], ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("arch", ["i3d_3x1x1", "i3d_3x3x3"])
@torch.no_grad()
def test_i3d_sees_the_2d_network_away_from_temporal_borders(arch, resnet50_2d):
    """Zero temporal padding only changes the first/last frames; interior frames are exact."""
    model, net = in_float64(arch, resnet50_2d)
    img = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    ref = stem2d(net, img)
    got = stem3d(model, repeat(img, 16))          # 5-tap conv1, stride 2: 8 output frames
    for t in range(1, 7):                         # frames 0 and 7 reach into the padding
        torch.testing.assert_close(got[:, :, t], ref, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got[:, :, 0], ref, atol=1e-3)
    # 40 frames into res2: the borders spread 3 frames (res2), 2 after pool2, then +2 (res3),
    # +3 (res4), +1 (res5): frames 8..11 of the 20 res5 frames are untouched.
    feat = net.maxpool(ref)
    ref = trunk2d(net, feat)
    got = trunk3d(model, repeat(feat, 40))
    assert got.shape[2] == 20
    for t in range(8, 12):
        torch.testing.assert_close(got[:, :, t], ref, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got[:, :, 0], ref, atol=1e-3)


def test_build_model_loads_a_state_dict_file(resnet50_2d, tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(resnet50_2d.state_dict(), path)
    cfg = load_config("kinetics", sets=[f"model.pretrained={path}"]).model
    model = build_model(cfg, frames=32)
    torch.testing.assert_close(model.res3._modules["2"].conv2.weight,
                               resnet50_2d.layer2[2].conv2.weight.unsqueeze(2))
    untouched = build_model(cfg, frames=32, load_pretrained=False)
    assert not torch.equal(untouched.conv1.weight, model.conv1.weight)
    cfg.pretrained = str(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing.pth.*neither 'imagenet' nor a file"):
        build_model(cfg, frames=32)


def test_a_narrow_network_cannot_take_imagenet_weights(resnet50_2d):
    model = ResNet3D(width=32)
    with pytest.raises(ValueError, match=r"conv1.weight \(64, 3, 7, 7\).*\(32, 3, 1, 7, 7\)"):
        inflate_imagenet(model, resnet50_2d.state_dict())
