"""``trainer.init_from`` loads a compiled parent fully and refuses one that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlrepro.config import ConfigError, load_config
from nlrepro.run.module import VideoClassifier
from nlrepro.run.train import _init_from

TABLE_2F = ["model.nonlocal.blocks=1"]
TABLE_2G = [*TABLE_2F, "model.frozen_bn=true", "model.nonlocal.norm=none"]


def _model(*sets: str) -> VideoClassifier:
    return VideoClassifier.from_config(load_config("proxy", sets=list(sets)),
                                       load_pretrained=False).eval()


def _save(model: VideoClassifier, path: Path, compiled: bool) -> Path:
    if compiled:  # what trainer.compile leaves in last.ckpt: model._orig_mod.*
        model.model = torch.compile(model.model)
    state = model.state_dict()
    assert any("_orig_mod." in k for k in state) == compiled
    torch.save({"state_dict": state}, path)
    return path


def test_compiled_checkpoint_loads_every_weight(tmp_path: Path) -> None:
    torch.manual_seed(0)
    parent = _model(*TABLE_2F)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        want = parent(x)
    path = _save(parent, tmp_path / "last.ckpt", compiled=True)

    child = _model(*TABLE_2F)
    report = _init_from(child, str(path), False)
    assert report["missing"] == []
    with torch.no_grad():
        torch.testing.assert_close(child(x), want, rtol=0, atol=0)


def test_compiled_2f_checkpoint_covers_a_2g_model(tmp_path: Path) -> None:
    """2f -> 2g: BN folds into frozen BN, the NL W_z BN is left out; all else loads."""
    torch.manual_seed(0)
    parent = _model(*TABLE_2F)
    fc = parent.model.fc.weight.detach().clone()
    path = _save(parent, tmp_path / "last.ckpt", compiled=True)
    child = _model(*TABLE_2G)
    report = _init_from(child, str(path), False)
    assert report["missing"] == []
    assert report["skipped"] and all(".bn." in k for k in report["skipped"])
    torch.testing.assert_close(child.model.fc.weight, fc, rtol=0, atol=0)


def test_folding_the_nonlocal_bn_makes_the_2g_model_compute_the_2f_function(tmp_path: Path
                                                                          ) -> None:
    """2f -> 2g with ``init_fold_nonlocal_bn``: every BN, the W_z BN of the NL block
    included, is folded, so at the start the fine-tuned model computes its parent's outputs;
    without the fold the NL block's output is rescaled and the outputs differ."""
    torch.manual_seed(0)
    parent = _model(*TABLE_2F, "model.nonlocal.bn_init_gamma=0.1")
    with torch.no_grad():  # trained-looking W_z BN statistics and affine
        (block,) = parent.model.nonlocal_blocks().values()
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.2, 3.0)
        block.bn.bias.uniform_(-0.2, 0.2)
        block.w_z.weight.normal_(0, 0.3)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        want = parent(x)
    path = _save(parent, tmp_path / "last.ckpt", compiled=False)
    outputs = {}
    for fold in (True, False):
        child = _model(*TABLE_2G)
        report = _init_from(child, str(path), fold)
        assert report["missing"] == []
        assert all(".bn." in k for k in report["skipped"]) and bool(report["skipped"]) != fold
        with torch.no_grad():
            outputs[fold] = child(x)
    torch.testing.assert_close(outputs[True], want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs[False], want, rtol=1e-2, atol=1e-3)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = _save(_model("model.nonlocal.blocks=0"), tmp_path / "last.ckpt", compiled=False)
    child = _model("model.arch=i3d_3x1x1", "model.nonlocal.blocks=1")
    with pytest.raises(ConfigError, match=r"trainer.init_from: .* \d+ of \d+ expected entries "
                                          r"would stay random \(absent: \['model\..*"
                                          r"other shape: \['model\."):
        _init_from(child, str(path), False)
