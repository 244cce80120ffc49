"""``nlrepro info``: parameter counts and multiply-adds against the paper (Table 2e, SPEC)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from nlrepro.config import ConfigError, load_config
from nlrepro.info import model_info
from nlrepro.models.resnet3d import build_model
from nlrepro.report.tables import PAPER_CSV

TABLE_2E = {  # row label of paper_table2.csv -> our config
    "C2D baseline": ["model.arch=c2d"],
    "I3D 3x3x3": ["model.arch=i3d_3x3x3"],
    "I3D 3x1x1": ["model.arch=i3d_3x1x1"],
    "NL C2D, 5-block": ["model.arch=c2d", "model.nonlocal.blocks=5"],
}


def has_nonlocal() -> bool:
    try:
        import nlrepro.models.non_local  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def table2e() -> dict[str, dict]:
    """model_info of every Table 2e row (R101, 32×224², 400 classes), computed once."""
    rows = {k: v for k, v in TABLE_2E.items() if has_nonlocal() or "NL" not in k}
    return {label: model_info(load_config("kinetics", sets=["model.depth=101", *sets]))
            for label, sets in rows.items()}


def test_c2d_r101_size_matches_the_paper(table2e):
    info = table2e["C2D baseline"]
    assert abs(info["params"] / 43.2e6 - 1) < 0.005          # paper: 43.2 M
    assert 34.0 <= info["gflops"] <= 35.5                     # SPEC: about 34-35 G mult-adds
    assert info["input_shape"] == [1, 3, 32, 224, 224]
    assert (info["arch"], info["depth"], info["nonlocal"]) == ("c2d", 101, [])


@pytest.mark.parametrize("label", ["I3D 3x3x3", "I3D 3x1x1", "NL C2D, 5-block"])
def test_table2e_costs_relative_to_c2d(label, table2e):
    """Within 0.05 of the paper's one-decimal ratios (paper_tables/paper_table2.csv)."""
    if label not in table2e:
        pytest.skip("nlrepro/models/non_local.py is not there yet")
    paper = pd.read_csv(PAPER_CSV, dtype={"table": str})
    row = paper[(paper.table == "2e") & (paper.row == label)].iloc[0]
    ours, base = table2e[label], table2e["C2D baseline"]
    assert abs(ours["params"] / base["params"] - row.params_rel) <= 0.05
    assert abs(ours["gflops"] / base["gflops"] - row.flops_rel) <= 0.05


def test_flops_are_multiply_adds_of_every_conv_and_linear():
    """Cross-check on a real forward: sum of out_numel × in_ch × kernel volume over the layers."""
    cfg = load_config("proxy", sets=["model.arch=i3d_3x3x3"])
    model = build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False).eval()
    macs = []

    def hook(m, args, out):
        w = m.weight
        macs.append(out.numel() * w[0].numel())   # each output: in_ch/groups × kernel products
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, cfg.data.frames, cfg.data.crop, cfg.data.crop))
    info = model_info(cfg)
    assert info["macs"] == sum(macs) and info["gflops"] == pytest.approx(sum(macs) / 1e9)
    assert info["params"] == sum(p.numel() for p in model.parameters())


def test_info_never_loads_weights(monkeypatch):
    import nlrepro.models.inflate as inflate

    def boom(*a, **k):
        raise AssertionError("nlrepro info must not load or download weights")
    monkeypatch.setattr(inflate, "imagenet_state_dict", boom)
    monkeypatch.setattr(inflate, "read_state_dict", boom)
    cfg = load_config("kinetics", sets=["model.pretrained=/no/such/file.pth"])
    assert cfg.model.pretrained and model_info(cfg)["params"] > 0


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="data.frames: 2 is too short"):
        model_info(load_config("kinetics", sets=["data.frames=2"]))


@pytest.mark.skipif(not has_nonlocal(), reason="nlrepro/models/non_local.py is not there yet")
def test_nl_i3d_r50_on_128_frames_costs_282_gflops():
    """SlowFast paper: NL I3D R50 (VNL's 128-frame model) = 282 G mult-adds at 128×256².

    282 G is the full spacetime affinity (res3 at 16×32², res4 at 16×16² positions).
    """
    sets = ["model.arch=i3d_3x1x1", "model.nonlocal.blocks=5", "data.frames=128",
            "data.stride=1", "data.crop=256"]
    info = model_info(load_config("kinetics", sets=sets))
    assert info["nonlocal"] == ["res3.1", "res3.3", "res4.1", "res4.3", "res4.5"]
    assert info["input_shape"] == [1, 3, 128, 256, 256]
    assert abs(info["gflops"] / 282 - 1) < 0.03


def test_cli_prints_json():
    exe = Path(sys.executable).with_name("nlrepro")
    out = subprocess.run([str(exe), "info", "--profile", "kinetics", "--set", "model.depth=101"],
                         capture_output=True, text=True, check=True, timeout=120)
    info = json.loads(out.stdout)
    assert info["depth"] == 101 and info["arch"] == "c2d"
    with torch.device("meta"):   # C2D R101 has exactly the 2D ResNet-101's parameters
        ref = torchvision.models.resnet101(num_classes=400)
    assert info["params"] == sum(p.numel() for p in ref.parameters())
    bad = subprocess.run([str(exe), "info", "--set", "model.nonlocal.blocks=7"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "[0, 1, 5, 10]" in bad.stderr
