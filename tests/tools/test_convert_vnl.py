"""convert-vnl on release-format pickles built here from randomly initialised nlrepro models.

``release_blobs`` below writes a model's weights under the release's blob names, derived
from the release's model-building rules (stage/block prefixes, ``_branch2a``..., the NL
block named after the residual block it follows) independently of the converter's table,
so a wrong entry in ``nlrepro.tools.vnl_names`` makes the round trip fail.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers.models import randomise_bn
from nlrepro.cli import main
from nlrepro.config import load_config
from nlrepro.models.frozen_bn import FrozenBN3d
from nlrepro.models.placement import STAGES
from nlrepro.models.resnet3d import build_model
from nlrepro.tools.convert_vnl import ConversionError, convert_file, load_blobs

INPUT = (1, 3, 8, 64, 64)  # small clip: the paper's networks, quick on a CPU

# The release's R50/R101 models, and the 128-frame recipe's frozen-BN network.
MODELS = {
    "c2d_r50": ["model.arch=c2d", "model.depth=50"],
    "nl_c2d_r50_5block": ["model.arch=c2d", "model.depth=50", "model.nonlocal.blocks=5"],
    "i3d_r50": ["model.arch=i3d_3x1x1", "model.depth=50"],
    "nl_i3d_r101_5block": ["model.arch=i3d_3x1x1", "model.depth=101", "model.nonlocal.blocks=5"],
    "nl_i3d_r50_frozen": ["model.arch=i3d_3x1x1", "model.depth=50", "model.nonlocal.blocks=5",
                          "model.frozen_bn=true", "model.nonlocal.norm=none"],
}


def kinetics(sets: list[str]):
    return load_config("kinetics", sets=[*sets, "data.frames=8"])


def randomised(cfg) -> nn.Module:
    """The configured network with every weight non-trivial (NL γ, biases, frozen BN too)."""
    torch.manual_seed(0)
    model = randomise_bn(build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                                     load_pretrained=False))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBN3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for block in model.nonlocal_blocks().values():
            for name, p in block.named_parameters():
                if name.endswith("weight") and p.dim() == 5:
                    p.normal_(0.0, 0.05)
                elif name.endswith("bias"):
                    p.uniform_(-0.1, 0.1)
        model.fc.bias.uniform_(-0.1, 0.1)
    return model.eval()


def release_blobs(model: nn.Module) -> dict[str, np.ndarray]:
    """``model``'s weights as a release pickle's blobs, named by the release's rules."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    blobs: dict[str, np.ndarray] = {}

    def conv(name: str, key: str) -> None:
        blobs[f"{name}_w"] = sd[f"{key}.weight"]
        if f"{key}.bias" in sd:
            blobs[f"{name}_b"] = sd[f"{key}.bias"]

    def bn(name: str, key: str) -> None:
        blobs[f"{name}_s"], blobs[f"{name}_b"] = sd[f"{key}.weight"], sd[f"{key}.bias"]
        if f"{key}.running_mean" in sd:  # affine (frozen) layers store no statistics
            blobs[f"{name}_rm"] = sd[f"{key}.running_mean"]
            blobs[f"{name}_riv"] = sd[f"{key}.running_var"]

    conv("conv1", "conv1")
    bn("res_conv1_bn", "bn1")
    for stage in STAGES:
        k = stage[-1]
        for i in range(getattr(model, stage).num_blocks):
            p, t = f"res{k}_{i}", f"{stage}.{i}"
            for branch, conv_key, bn_key in (("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"),
                                             ("2c", "conv3", "bn3")):
                conv(f"{p}_branch{branch}", f"{t}.{conv_key}")
                bn(f"{p}_branch{branch}_bn", f"{t}.{bn_key}")
            if f"{t}.downsample.0.weight" in sd:
                conv(f"{p}_branch1", f"{t}.downsample.0")
                bn(f"{p}_branch1_bn", f"{t}.downsample.1")
    for key, block in model.nonlocal_blocks().items():
        stage, i = key.split(".")
        p, t = f"nonlocal_conv{stage[-1]}_{i}", f"{stage}.nl{i}"
        for part, torch_part in (("theta", "theta"), ("phi", "phi"), ("g", "g"), ("out", "w_z")):
            conv(f"{p}_{part}", f"{t}.{torch_part}")
        if block.bn is not None:
            bn(f"{p}_bn", f"{t}.bn")
    blobs["pred_w"], blobs["pred_b"] = sd["fc.weight"], sd["fc.bias"]
    return blobs


def write_pickle(path: Path, blobs: dict[str, np.ndarray], solver_state: bool = True) -> Path:
    """A pickle in the release's format: ``{"blobs": ...}``, protocol 2, with solver state."""
    blobs = dict(blobs)
    if solver_state:
        blobs.update({f"{k}_momentum": np.zeros_like(v) for k, v in list(blobs.items())[:5]})
        blobs.update(lr=np.array(0.0001, np.float32), model_iter=400000)
    with open(path, "wb") as fh:
        pickle.dump({"blobs": blobs}, fh, protocol=2)
    return path


def logits(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(INPUT)
    with torch.no_grad():
        return model.eval()(x)


def converted(cfg, out: Path) -> nn.Module:
    model = build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                        load_pretrained=False)
    model.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_gives_the_source_models_logits(tmp_path, name):
    cfg = kinetics(MODELS[name])
    source = randomised(cfg)
    blobs = release_blobs(source)
    pkl = write_pickle(tmp_path / "model.pkl", blobs)
    out = tmp_path / "model.pt"
    report = convert_file(pkl, cfg, out)
    assert report["unmatched"] == [] and report["used"] == len(blobs)
    assert report["ignored_solver_state"] == 5 + 2
    expected = logits(source)
    assert expected.std() > 0
    assert torch.equal(logits(converted(cfg, out)), expected)
    placed = len(source.nonlocal_blocks())
    assert placed == (5 if "5block" in name or "frozen" in name else 0)


def test_release_names_of_the_r101_5_block_placement(tmp_path):
    """The blobs the release's R101 NL model holds (res4 layer_mod 7: blocks 6, 13, 20)."""
    cfg = kinetics(MODELS["nl_i3d_r101_5block"])
    from nlrepro.tools.vnl_names import blob_names

    names = set(blob_names(build_model(cfg.model, frames=8, load_pretrained=False)).values())
    for i in (1, 3):
        assert f"nonlocal_conv3_{i}_theta_w" in names
    for i in (6, 13, 20):
        assert {f"nonlocal_conv4_{i}_phi_b", f"nonlocal_conv4_{i}_out_w",
                f"nonlocal_conv4_{i}_bn_riv"} <= names
    assert "res4_22_branch2c_bn_riv" in names and "res4_2_branch2a_w" in names


def test_swapping_theta_and_phi_changes_the_logits(tmp_path):
    cfg = kinetics(MODELS["nl_c2d_r50_5block"])
    source = randomised(cfg)
    blobs = release_blobs(source)
    for sfx in ("_w", "_b"):
        a, b = f"nonlocal_conv3_1_theta{sfx}", f"nonlocal_conv3_1_phi{sfx}"
        blobs[a], blobs[b] = blobs[b], blobs[a]
    out = tmp_path / "swapped.pt"
    convert_file(write_pickle(tmp_path / "swapped.pkl", blobs), cfg, out)
    assert not torch.allclose(logits(converted(cfg, out)), logits(source), atol=1e-4)


def test_bn_pickle_is_folded_into_a_frozen_bn_model(tmp_path):
    """A 32-frame (BN) pickle converted for the frozen-BN network: statistics folded in."""
    bn_cfg = kinetics(MODELS["i3d_r50"])
    source = randomised(bn_cfg)
    frozen_cfg = kinetics([*MODELS["i3d_r50"], "model.frozen_bn=true"])
    out = tmp_path / "frozen.pt"
    report = convert_file(write_pickle(tmp_path / "bn.pkl", release_blobs(source)), frozen_cfg, out)
    assert report["unmatched"] == []
    torch.testing.assert_close(logits(converted(frozen_cfg, out)), logits(source),
                               rtol=1e-4, atol=1e-4)


def test_missing_blob_and_wrong_shape_are_refused(tmp_path):
    cfg = kinetics(MODELS["c2d_r50"])
    blobs = release_blobs(randomised(cfg))
    gone = dict(blobs)
    del gone["res3_2_branch2b_bn_riv"]
    with pytest.raises(ConversionError, match="missing: res3_2_branch2b_bn_riv"):
        convert_file(write_pickle(tmp_path / "a.pkl", gone), cfg, tmp_path / "a.pt")
    bad = dict(blobs, res2_0_branch1_w=np.zeros((256, 64, 3, 1, 1), np.float32))
    with pytest.raises(ConversionError, match=r"res2_0_branch1_w \(256, 64, 3, 1, 1\)"):
        convert_file(write_pickle(tmp_path / "b.pkl", bad), cfg, tmp_path / "b.pt")
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_an_nl_pickle_for_a_model_without_nl_blocks_is_refused(tmp_path):
    """Converting NL C2D with blocks=0 would silently drop its NL blocks: refused, listed."""
    nl = release_blobs(randomised(kinetics(MODELS["nl_c2d_r50_5block"])))
    pkl = write_pickle(tmp_path / "nl.pkl", nl)
    cfg = kinetics(MODELS["c2d_r50"])
    with pytest.raises(ConversionError, match="nonlocal_conv3_1_bn_b"):
        convert_file(pkl, cfg, tmp_path / "c2d.pt")
    report = convert_file(pkl, cfg, tmp_path / "c2d.pt", allow_unmatched=True)
    assert len(report["unmatched"]) == 5 * (4 * 2 + 4)  # θ φ g out (w, b) + BN (s b rm riv)
    assert all(b.startswith("nonlocal_conv") for b in report["unmatched"])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_calls_a_function_is_refused(tmp_path):
    marker = tmp_path / "ran"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": {"conv1_w": _RunsCode(marker)}}, protocol=2))
    with pytest.raises(ConversionError, match=r"refusing global (posix|os)\.system"):
        load_blobs(pkl)
    assert not marker.exists()


def test_cli_converts_and_exits_2_with_one_line_on_a_bad_pickle(tmp_path, capsys):
    sets = ["model.arch=c2d", "model.depth=50"]
    source = randomised(load_config("proxy", sets=sets))
    pkl = write_pickle(tmp_path / "proxy.pkl", release_blobs(source))
    out = tmp_path / "proxy.pt"
    assert main(["convert-vnl", str(pkl), str(out), "--profile", "proxy", "--set", *sets]) == 0
    assert out.is_file() and out.with_suffix(".yaml").is_file() and out.with_suffix(".json").is_file()
    capsys.readouterr()
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    assert main(["convert-vnl", str(tmp_path / "junk.pkl"), str(tmp_path / "j.pt"),
                 "--profile", "proxy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nlrepro convert-vnl: error:") and "junk.pkl" in err[0]


def test_a_test_net_pred_conv_is_accepted_for_the_fc(tmp_path):
    """The release's test net stores pred as a 1x1x1 conv (classes, C, 1, 1, 1)."""
    cfg = load_config("proxy", sets=["model.nonlocal.blocks=5"])
    source = randomised(cfg)
    blobs = release_blobs(source)
    blobs["pred_w"] = blobs["pred_w"][:, :, None, None, None]
    out = tmp_path / "proxy.pt"
    convert_file(write_pickle(tmp_path / "proxy.pkl", blobs, solver_state=False), cfg, out)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(converted(cfg, out).eval()(x), source(x))
