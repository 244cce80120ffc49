"""Frame pre-training (model.pretrained: proxy-frames): the proxy's stand-in for ImageNet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from nlrepro.proxy import pretrain
from nlrepro.config import ConfigError, load_config
from nlrepro.models.inflate import inflate_imagenet
from nlrepro.models.resnet3d import build_model
from nlrepro.run.module import VideoClassifier
from helpers.models import randomise_bn
from helpers.proxy_rule import label_from_pixels

TINY = ["data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1", "trainer.threads=1"]


def tiny(tmp_path: Path, *extra: str):
    return load_config("proxy", sets=[*TINY, f"data.root={tmp_path / 'proxy'}", *extra])


# ---- the exported 2D weights enter a video model like ImageNet weights ---------------------
def test_export_is_a_torchvision_style_2d_state_dict(tmp_path):
    cfg = tiny(tmp_path)
    state = pretrain.to_2d_state_dict(pretrain.backbone_2d(cfg))
    assert state and not any(k.startswith(("res", "fc.")) for k in state)
    assert {k.split(".")[0] for k in state} == {"conv1", "bn1", "layer1", "layer2", "layer3",
                                                "layer4"}
    assert all(v.dim() == 4 for k, v in state.items() if k.endswith("conv1.weight"))


@pytest.mark.parametrize("blocks", [0, 1])
def test_c2d_video_model_computes_the_2d_network_frame_by_frame(tmp_path, blocks):
    cfg = tiny(tmp_path, f"model.nonlocal.blocks={blocks}")
    torch.manual_seed(0)
    net2d = randomise_bn(pretrain.backbone_2d(cfg)).eval()
    video = build_model(cfg.model, load_pretrained=False).eval()
    report = inflate_imagenet(video, pretrain.to_2d_state_dict(net2d))
    # Everything but the classifier and the (fresh) NL blocks came from the 2D weights.
    assert {k.split(".")[0] for k in report.missing if ".nl" not in k} == {"fc"}
    assert not report.skipped
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        per_clip = video.forward_features(clip)["res2"]  # before the temporal pool
        for t in range(clip.shape[2]):
            per_frame = net2d.forward_features(clip[:, :, t:t + 1])["res2"][:, :, 0]
            torch.testing.assert_close(per_clip[:, :, t], per_frame, rtol=1e-5, atol=1e-5)


def test_i3d_inflates_the_frame_weights(tmp_path):
    cfg = tiny(tmp_path, "model.arch=i3d_3x3x3")
    state = pretrain.to_2d_state_dict(pretrain.backbone_2d(cfg))
    video = build_model(cfg.model, load_pretrained=False)
    report = inflate_imagenet(video, state)
    assert len(report.loaded) == len(state)
    w3 = video.state_dict()["res2.0.conv2.weight"]
    assert w3.shape[2] == 3  # inflated 3x3x3 (Table 1 of the paper)
    torch.testing.assert_close(w3.sum(2), state["layer1.0.conv2.weight"])


# ---- the image task ------------------------------------------------------------------------
def test_frames_show_cue_and_probe_together_and_are_labelled_with_what_they_show(tmp_path):
    """``objects``: (cue colour, ring colour, core) as one of 18 classes, and the task's rule
    read off the pixels agrees with it; ``label``: the clip's class itself."""
    p = tiny(tmp_path).data.proxy
    assert p.pretrain_target == "objects"
    frames, classes = pretrain.render_frames(p, 96)
    assert frames.shape == (96, p.size, p.size, 3) and frames.dtype == np.uint8
    assert pretrain.frame_classes("objects", 4) == 18 and set(classes.tolist()) <= set(range(18))
    assert len(set(classes.tolist())) >= 15
    cue, ring, core = classes // 6, classes // 2 % 3, classes % 2
    assert [label_from_pixels(f, f) for f in frames] == (2 * (ring != cue) + core).tolist()
    same, labels = pretrain.render_frames(dataclasses.replace(p, pretrain_target="label"), 96)
    assert np.array_equal(same, frames)
    assert labels.tolist() == (2 * (ring != cue) + core).tolist()


def test_the_frame_target_is_part_of_the_weights_identity(tmp_path):
    objects, label = tiny(tmp_path), tiny(tmp_path, "data.proxy.pretrain_target=label")
    assert pretrain.weights_path(objects) != pretrain.weights_path(label)
    assert pretrain.backbone_2d(objects).fc.out_features == 18
    assert pretrain.backbone_2d(label).fc.out_features == 4
    with pytest.raises(ConfigError, match=r"pretrain_target: 'colours' .*objects, label"):
        tiny(tmp_path, "data.proxy.pretrain_target=colours")  # refused when loaded


def test_frames_are_deterministic_per_seed_and_stream(tmp_path):
    p = tiny(tmp_path).data.proxy
    a, la = pretrain.render_frames(p, 8)
    b, lb = pretrain.render_frames(p, 8)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, pretrain.render_frames(p, 8, stream=1)[0])
    assert not np.array_equal(a, pretrain.render_frames(dataclasses.replace(p, seed=1), 8)[0])
    # A longer set starts with the shorter one: frame i does not depend on n.
    assert np.array_equal(pretrain.render_frames(p, 12)[0][:8], a)


# ---- caching, keys, errors -----------------------------------------------------------------
def test_weights_are_trained_once_keyed_by_what_they_depend_on(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)
    path = pretrain.ensure_frame_pretrained(cfg)
    assert path.parent == tmp_path / "pretrained" and path.is_file()
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    record = path.with_suffix(".json").read_text()
    assert "held_out_top1" in record and "seconds" in record
    state = torch.load(path, weights_only=True)
    assert "layer1.0.conv1.weight" in state

    def no_training(_cfg):
        raise AssertionError("trained again")
    monkeypatch.setattr(pretrain, "train_frames", no_training)
    assert pretrain.ensure_frame_pretrained(cfg) == path
    # The video counts do not change a frame; the frame recipe and the backbone do.
    assert pretrain.weights_path(tiny(tmp_path, "data.proxy.num_train=7")) == path
    for other in ("data.proxy.pretrain_epochs=2", "model.width=8", "data.proxy.noise=4.0"):
        assert pretrain.weights_path(tiny(tmp_path, other)) != path, other


def test_training_the_weights_leaves_the_callers_rng_alone(tmp_path):
    """A run must not depend on whether its weights were trained in its process or cached."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain.ensure_frame_pretrained(tiny(tmp_path))  # trains
    assert torch.equal(torch.rand(3), expected)


def test_video_model_starts_from_the_cached_weights(tmp_path):
    cfg = tiny(tmp_path, "model.nonlocal.blocks=1")
    # Building never trains: without the weights file a proxy-frames model is refused.
    with pytest.raises(ConfigError, match="frames_weights"):
        VideoClassifier.from_config(cfg)
    assert not pretrain.weights_path(cfg).exists()
    model = VideoClassifier.from_config(cfg, pretrained_path=pretrain.frames_weights(cfg)).model
    state = torch.load(pretrain.weights_path(cfg), weights_only=True)
    torch.testing.assert_close(model.state_dict()["res3.1.conv2.weight"][:, :, 0],
                               state["layer2.1.conv2.weight"])
    torch.testing.assert_close(model.state_dict()["bn1.running_var"], state["bn1.running_var"])
    # Not pre-trained when asked not to (resume, init_from): the file is not even needed.
    fresh = VideoClassifier.from_config(tiny(tmp_path / "elsewhere"), load_pretrained=False)
    assert not (tmp_path / "elsewhere" / "pretrained").exists()
    assert not torch.equal(fresh.model.state_dict()["bn1.running_var"], state["bn1.running_var"])


def test_proxy_frames_needs_the_proxy_data():
    with pytest.raises(ConfigError, match=r"model.pretrained: 'proxy-frames'.*imagenet"):
        load_config("kinetics", sets=["model.pretrained=proxy-frames"])


@pytest.mark.parametrize("key,value", [("pretrain_images", 0), ("pretrain_epochs", 0)])
def test_bad_frame_recipe_is_named(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"data.proxy.{key}: {value}"):
        pretrain.weights_path(tiny(tmp_path, f"data.proxy.{key}={value}"))


@pytest.mark.slow
def test_profile_recipe_learns_the_in_frame_match(tmp_path):
    """The profile's own recipe (3,000 frames x 10 epochs, ~35 s on one thread) learns the
    colour match that a video model must then carry across time: >= 90% on held-out frames
    (chance: 25%; the core colour alone: 50%)."""
    cfg = load_config("proxy", sets=[f"data.root={tmp_path / 'proxy'}", "trainer.threads=1"])
    torch.set_num_threads(1)
    _, metrics = pretrain.train_frames(cfg)
    assert metrics["held_out_top1"] >= 90.0, metrics
