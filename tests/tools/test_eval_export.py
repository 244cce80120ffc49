"""eval and export on one tiny real proxy run (real videos, real Lightning training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nlrepro.cli import main
from nlrepro.config import load_config, read_config, save_config
from nlrepro.models.resnet3d import build_model
from nlrepro.run.identity import config_hash
from nlrepro.run.module import VideoClassifier
from nlrepro.tools.weights import sha256

TINY = ["data.proxy.num_train=48", "data.proxy.num_val=16", "data.proxy.num_test=16",
        "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
        "data.batch_size=16", "trainer.log_every_n_steps=1", "trainer.deterministic=true",
        "data.num_workers=0", "trainer.threads=1", "trainer.max_epochs=2",
        "model.nonlocal.blocks=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nlrepro.run.train import train

    tmp = tmp_path_factory.mktemp("evalrun")
    cfg = load_config("proxy", sets=[*TINY, f"data.root={tmp / 'proxy'}"])
    train(cfg, tmp / "run")
    return tmp / "run"


def run_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def clip() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(2, 3, 8, 32, 32)


@pytest.mark.slow
def test_eval_of_a_run_reproduces_its_own_test(run, capsys):
    assert main(["eval", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = run / "eval" / "summary.json"
    assert printed["summary"] == str(out)
    got, own = json.loads(out.read_text()), run_summary(run)["metrics"]
    for key in ("test/top1_video", "test/top5_video", "test/videos", "test/videos_failed",
                "test/views_per_video"):
        assert got["metrics"][key] == own[key], key
    assert got["eval_of"]["kind"] == "run"
    assert got["eval_of"]["sha256"] == sha256(run / "checkpoints" / "last.ckpt")
    assert got["run_id"] == run_summary(run)["run_id"]
    assert {"torch", "lightning", "av"} <= set(got["versions"])
    assert got["videos"]["test_videos"] == 16 and got["videos"]["test_failed"] == 0


@pytest.mark.slow
def test_export_gives_the_checkpoints_logits_and_evaluates_the_same(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "pub")]) == 0
    weights, config = tmp_path / "pub" / "model.pt", tmp_path / "pub" / "config.yaml"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith("model.") for k in state) and "optimizer_states" not in state
    cfg = read_config(config)
    assert config_hash(cfg) == config_hash(read_config(run / "config.yaml"))

    exported = build_model(cfg.model, frames=cfg.data.frames, crop=cfg.data.crop,
                           load_pretrained=False)
    exported.load_state_dict(state)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = VideoClassifier(ckpt["hyper_parameters"]["config"], load_pretrained=False)
    module.load_state_dict(ckpt["state_dict"])
    # The run trains channels_last; the same memory format on both sides gives equal bits.
    module.model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = module.model.eval()(clip())
        assert expected.std() > 0
        assert torch.equal(exported.eval()(clip()), expected)

    # The exported file and the checkpoint itself evaluate to the run's own test result.
    capsys.readouterr()
    own = run_summary(run)["metrics"]["test/top1_video"]
    assert main(["eval", str(weights), "--out", str(tmp_path / "a.json")]) == 0
    assert main(["eval", str(run / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "b.json")]) == 0
    for name, kind in (("a.json", "state-dict"), ("b.json", "lightning-ckpt")):
        got = json.loads((tmp_path / name).read_text())
        assert got["eval_of"]["kind"] == kind and got["metrics"]["test/top1_video"] == own


@pytest.mark.slow
def test_eval_refuses_weights_that_do_not_fit_the_config(run, capsys):
    assert main(["eval", str(run), "--set", "model.nonlocal.blocks=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected" in err[0] and "res4.nl1" in err[0]


def test_eval_and_export_user_errors_exit_2_with_one_line(tmp_path, capsys):
    cfg = load_config("proxy")
    model = build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    (tmp_path / "empty").mkdir()
    cases = [(["eval", str(tmp_path / "nothing")], "no such run folder"),
             (["eval", str(tmp_path / "empty")], "not a run folder"),
             (["eval", str(bare)], "give --profile"),
             (["export", str(bare)], "already a plain state dict")]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)


def test_a_plain_state_dict_takes_its_config_from_the_yaml_beside_it(tmp_path):
    from nlrepro.tools.weights import load_source, resolve_config

    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1"])
    model = build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    save_config(cfg, tmp_path / "w.yaml")
    source = load_source(tmp_path / "w.pt")
    assert source.kind == "state-dict" and source.config_path == tmp_path / "w.yaml"
    got = resolve_config(source, None, ["data.root=/elsewhere"])
    assert got.model.nonlocal_.blocks == 1 and got.data.root == "/elsewhere"


@pytest.mark.slow
def test_eval_with_precise_bn_recomputes_the_bn_statistics(run, tmp_path):
    """--precise-bn runs training's precise BN before the test: the BN statistics change."""
    from nlrepro.tools.evaluate import evaluate, load_module
    from nlrepro.tools.weights import load_source, resolve_config

    source = load_source(run)
    cfg = resolve_config(source, None, ["trainer.precise_bn_batches=2"])
    stored = {k: v for k, v in source.state_dict.items() if k.endswith("running_var")}
    plain, recomputed = load_module(source, cfg), load_module(source, cfg)
    assert not evaluate(source, cfg, precise_bn=False, module=plain)["precise_bn"]
    summary = evaluate(source, cfg, precise_bn=True, module=recomputed)
    assert summary["precise_bn"] and summary["metrics"]["test/videos"] == 16
    kept = plain.model.state_dict()
    assert all(torch.equal(kept[k].cpu(), v) for k, v in stored.items())
    changed = recomputed.model.state_dict()
    assert sum(not torch.equal(changed[k].cpu(), v) for k, v in stored.items()) == len(stored)


def test_eval_without_the_data_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = load_config("proxy", sets=["model.pretrained=null"])
    bare = tmp_path / "bare.pt"
    torch.save(build_model(cfg.model, frames=cfg.data.frames, load_pretrained=False).state_dict(),
               bare)
    argv = ["eval", str(bare), "--profile", "proxy", "--set", "model.pretrained=null",
            "data.proxy=null", f"data.root={tmp_path / 'nothing'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.csv: cannot read the list" in err[0]


def test_checkpoint_state_loses_the_wrapper_and_compile_prefixes():
    from nlrepro.tools.weights import model_state

    state = {"model.conv1.weight": 1, "model._orig_mod.fc.bias": 2, "val_top1.tp": 3}
    assert model_state(state) == {"conv1.weight": 1, "fc.bias": 2}
