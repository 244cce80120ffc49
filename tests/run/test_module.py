"""The LightningModule: video-level accuracy over views, weight-decay groups, lr schedule."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nlrepro.config import load_config
from nlrepro.run.module import (VideoClassifier, hold_steps, lr_factor, make_optimizer,
                                param_groups)


class ViewsData(L.LightningDataModule):
    """Six videos × four views of random clips; video 5 has one undecodable view."""

    num_test_videos = 6

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        n = 6 * 4
        self.clips = torch.randn(n, 3, 16, 32, 32, generator=g)
        self.video = torch.arange(6).repeat_interleave(4)
        self.label = torch.tensor([0, 1, 2, 3, 0, 1]).repeat_interleave(4)
        self.ok = torch.ones(n, dtype=torch.bool)
        self.ok[-1] = False

    def test_dataloader(self) -> DataLoader:
        zeros = torch.zeros_like(self.video)
        ds = TensorDataset(self.clips, self.label, self.video, zeros, zeros, self.ok)
        return DataLoader(ds, batch_size=5)


@pytest.fixture(scope="module")
def model() -> VideoClassifier:
    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1", "trainer.channels_last=false"])
    torch.manual_seed(0)
    m = VideoClassifier.from_config(cfg, load_pretrained=False)  # no frame pre-training
    # A trained-looking head so that predictions differ between videos.
    torch.nn.init.normal_(m.model.fc.weight, std=5.0)
    return m.eval()


def test_video_accuracy_averages_softmax_over_views(model):
    data = ViewsData()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.test(model, datamodule=data, verbose=False)
    with torch.no_grad():
        probs = torch.softmax(model(data.clips).double(), 1)
    correct = 0
    for v in range(5):  # video 5 failed: it counts as wrong
        p = probs[data.video == v].mean(0)
        correct += int(p.argmax() == data.label[data.video == v][0])
    report = model.test_report
    assert report["test/videos"] == 6 and report["test/videos_failed"] == 1
    assert report["test/top1_video"] == pytest.approx(100 * correct / 6)
    assert report["test/top5_video"] == pytest.approx(100 * 5 / 6)  # 4 classes: top-5 = all


def test_no_weight_decay_on_batchnorm(model):
    groups = param_groups(model.model, 1e-4, 0.0)
    bn = {id(p) for m in model.model.modules() if isinstance(m, torch.nn.BatchNorm3d)
          for p in m.parameters()}
    assert {id(p) for p in groups[1]["params"]} == bn and groups[1]["weight_decay"] == 0.0
    assert not bn & {id(p) for p in groups[0]["params"]}
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.model.parameters())


def test_lr_schedules():
    step = [lr_factor(s, 400, 0, "step", [0.375, 0.75], 0.1) for s in (0, 149, 150, 299, 300)]
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(0, 100, 10, "cosine", [], 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine", [], 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine", [], 0.1) == pytest.approx(0.0)


def test_adamw_takes_the_configured_eps_and_sgd_its_momentum(model):
    cfg = load_config("proxy", sets=["optim.optimizer=adamw", "optim.eps=1.0e-4"])
    opt = make_optimizer(model.model, cfg.optim)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["eps"] for g in opt.param_groups] == [1e-4, 1e-4]
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.optim.weight_decay, 0.0]
    sgd = make_optimizer(model.model, load_config("kinetics").optim)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9


class _Snapshots(L.Callback):
    """The non-local block's parameters after every training step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({n: p.detach().clone() for n, p in _block(pl_module).named_parameters()})


def _block(module: VideoClassifier):
    from nlrepro.models.non_local import NonLocalBlock

    return next(m for m in module.model.modules() if isinstance(m, NonLocalBlock))


def test_embed_hold_keeps_f_at_its_start_for_the_held_steps_only():
    """optim.embed_hold_epochs: θ and φ stay exactly at their start for the held steps (2 of
    4 per epoch at 0.5), while g and W_z train from the first step; then θ and φ train too."""
    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1", "trainer.channels_last=false",
                                     "optim.embed_hold_epochs=0.5", "trainer.max_epochs=1"])
    torch.manual_seed(0)
    module = VideoClassifier.from_config(cfg, load_pretrained=False)
    start = {n: p.detach().clone() for n, p in _block(module).named_parameters()}
    g = torch.Generator().manual_seed(1)
    clips = torch.randn(8, 3, 8, 32, 32, generator=g)
    data = DataLoader(TensorDataset(clips, torch.arange(8) % 4, torch.zeros(8, dtype=torch.long)),
                      batch_size=2)
    snaps = _Snapshots()
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=1,
              enable_model_summary=False, enable_checkpointing=False,
              callbacks=[snaps]).fit(module, data)
    assert module.hold_steps == 2 and len(snaps.steps) == 4
    held = [n for n in start if n.startswith(("theta.", "phi."))]
    assert len(held) == 4  # weights and biases of θ and φ
    for step, params in enumerate(snaps.steps):
        moved = {n for n in held if not torch.equal(params[n], start[n])}
        assert moved == (set() if step < 2 else set(held)), step
        assert not torch.equal(params["g.weight"], start["g.weight"])
        assert not torch.equal(params["w_z.weight"], start["w_z.weight"])


def test_affinity_parameters_are_those_of_f():
    """What the hold holds: θ, φ (and w_f for concatenation); the Gaussian's f has none."""
    from nlrepro.models.non_local import NonLocalBlock

    names = {}
    for inst in ("gaussian", "embedded_gaussian", "dot_product", "concatenation"):
        block = NonLocalBlock(16, instantiation=inst, concat_offset=5.0)
        ids = {id(p) for p in block.affinity_parameters()}
        names[inst] = sorted(n.split(".")[0] for n, p in block.named_parameters() if id(p) in ids)
    assert names["gaussian"] == []
    assert names["embedded_gaussian"] == names["dot_product"] == ["phi", "phi", "theta", "theta"]
    assert names["concatenation"] == ["phi", "phi", "theta", "theta", "w_f", "w_f"]


def test_embed_hold_counts_steps_and_spares_blocks_that_start_trained():
    cfg = load_config("relations", sets=["optim.embed_hold_epochs=1.0"])
    assert hold_steps(cfg, 250.0) == 250 and hold_steps(load_config("relations"), 250.0) == 0
    fine_tune = load_config("relations", sets=["optim.embed_hold_epochs=1.0",
                                               "trainer.init_from=parent/last.ckpt"])
    assert hold_steps(fine_tune, 1000.0) == 0
    only_concat = ["optim.embed_hold_epochs=1.0",
                   "optim.embed_hold_instantiations=[concatenation]"]
    for inst, steps in (("concatenation", 250), ("embedded_gaussian", 0), ("gaussian", 0)):
        cfg = load_config("relations", sets=only_concat + [f"model.nonlocal.instantiation={inst}"])
        assert hold_steps(cfg, 250.0) == steps, inst
