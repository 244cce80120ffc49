"""VideoDataModule with a real Lightning Trainer: batch layout, resumable shuffling, and
failure counts that survive DataLoader worker processes."""

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as tnf

from nlrepro.config import ConfigError, load_config
from nlrepro.data.datamodule import EpochRandomSampler, VideoDataModule

GOOD = ["index40", "index12", "one_frame"]


def write_root(root: Path, test_videos: dict[str, Path]) -> Path:
    (root / "v").mkdir(parents=True)
    for path in test_videos.values():
        if path.exists():
            shutil.copy(path, root / "v" / path.name)
    lines = {  # label = position, so every class 0..3 occurs in train
        "train": [*GOOD, "index40", "missing", "index12", "text", "index40"],
        "val": [*GOOD, "empty"],
        "test": [*GOOD, "truncated", "zero_frames"],
    }
    for split, names in lines.items():
        (root / f"{split}.csv").write_text("".join(f"v/{n}.mp4 {i % 4}\n" for i, n in enumerate(names)))
    (root / "bad.txt").write_text("v/zero_frames.mp4\tbad\tno video stream\n")
    return root


def config(root: Path, *sets: str):
    return load_config("proxy", sets=[
        f"data.root={root}", "data.proxy=null", "model.pretrained=null", "data.frames=4",
        "data.stride=2",
        "data.train_scale=[32,40]", "data.crop=32", "data.test_scale=32", "data.test_crop=32",
        "data.num_clips=2", "data.num_crops=3", "data.batch_size=4", "data.num_workers=0",
        "data.exclude=bad.txt", "data.cache_decoded=false", "data.class_index=null", *sets])


class Probe(L.LightningModule):
    """The smallest model that consumes the documented batches and records them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.retries = 0
        self.views: dict[str, list[tuple[int, int, int, bool]]] = {"val": [], "test": []}

    def training_step(self, batch, batch_idx):
        clip, label, retries = batch
        assert clip.shape == (4, 3, 4, 32, 32) and clip.dtype == torch.float32
        self.retries += int(retries.sum())
        return tnf.cross_entropy(self.fc(clip.mean((2, 3, 4))), label)

    def _eval(self, split, batch):
        clip, label, video, clip_idx, crop, ok = batch
        assert clip.shape[1:] == (3, 4, 32, 32) and ok.dtype == torch.bool
        self.views[split] += list(zip(video.tolist(), clip_idx.tolist(), crop.tolist(), ok.tolist()))

    def validation_step(self, batch, batch_idx):
        self._eval("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(cfg) -> tuple[VideoDataModule, Probe]:
    dm, probe = VideoDataModule(cfg), Probe()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(probe, datamodule=dm)
    trainer.test(probe, datamodule=dm, verbose=False)
    return dm, probe


def check_report(dm: VideoDataModule, probe: Probe) -> None:
    report = dm.failure_report()
    assert report["train_videos"] == 8 and report["train_excluded"] == 0
    assert report["train_retries"] == probe.retries >= 2  # two unreadable videos were replaced
    assert {k: report[k] for k in ("val_videos", "val_failed", "val_used")} == \
        {"val_videos": 4, "val_failed": 1, "val_used": 3}
    assert {k: report[k] for k in ("test_videos", "test_excluded", "test_failed", "test_used")} \
        == {"test_videos": 5, "test_excluded": 1, "test_failed": 2, "test_used": 3}
    assert [Path(p).name for p in report["test_failed_examples"]] == ["truncated.mp4",
                                                                      "zero_frames.mp4"]
    assert sorted(probe.views["val"]) == [(v, 0, 0, v != 3) for v in range(4)]
    assert sorted(probe.views["test"]) == [(v, c, k, v < 3) for v in range(5)
                                           for c in range(2) for k in range(3)]
    assert dm.num_test_videos == 5


def test_fit_and_test_in_process(tmp_path, test_videos):
    dm, probe = run(config(write_root(tmp_path, test_videos)))
    check_report(dm, probe)


def test_counts_survive_worker_processes(tmp_path, test_videos):
    dm, probe = run(config(write_root(tmp_path, test_videos), "data.num_workers=2"))
    check_report(dm, probe)
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.multiprocessing_context is not None


def test_loaders_and_shuffling(tmp_path, test_videos):
    dm = VideoDataModule(config(write_root(tmp_path, test_videos), "data.cache_decoded=true"))
    dm.setup("fit")
    train = dm.train_dataloader()
    assert isinstance(train.sampler, EpochRandomSampler) and train.drop_last
    assert not train.persistent_workers and not train.pin_memory  # no workers, no CUDA here
    order = {}
    for epoch in (0, 1, 0):
        train.sampler.set_epoch(epoch)
        order.setdefault(epoch, []).append(list(train.sampler))
    assert order[0][0] == order[0][1] != order[1][0]  # reproducible per epoch, so after a resume
    assert sorted(order[1][0]) == list(range(8))
    assert list(train.sampler) == order[1][0]  # after epoch 0, without set_epoch: epoch 1
    other_seed = VideoDataModule(config(tmp_path, "seed=1")).train_dataloader().sampler
    other_seed.set_epoch(0)
    assert list(other_seed) != order[0][0]
    assert len(dm.val_dataloader().dataset) == 4  # one view per video
    assert len(dm.test_dataloader().dataset) == 5 * 2 * 3
    assert dm.classes is not None and len(dm.classes) == 4


def name_labels(root: Path) -> None:
    """Rewrite the lists with class names instead of ids."""
    names = {0: "jump", 1: "run", 2: "swim", 3: "walk"}
    for split in ("train", "val", "test"):
        lst = root / f"{split}.csv"
        lst.write_text("".join(f"{p} {names[int(lab)]}\n" for p, lab in
                               (line.split() for line in lst.read_text().splitlines())))


def test_class_count_must_match_the_model(tmp_path, test_videos):
    root = write_root(tmp_path, test_videos)
    for index in ("null", "classes.json"):
        with pytest.raises(ValueError, match="train.csv:4: label id 3 is outside the class count"):
            VideoDataModule(config(root, "model.num_classes=3", f"data.class_index={index}")
                            ).setup("fit")
    assert not (root / "classes.json").exists()  # ids only: no names to write
    name_labels(root)
    dm = VideoDataModule(config(root, "model.num_classes=400"))
    with pytest.raises(ConfigError, match="model.num_classes: 400 does not match the 4 classes"):
        dm.setup("fit")


def test_class_index_file_is_written_from_train_and_reused(tmp_path, test_videos):
    root = write_root(tmp_path, test_videos)
    name_labels(root)
    dm = VideoDataModule(config(root, "data.class_index=classes.json"))
    dm.setup("test")
    assert (root / "classes.json").is_file() and dm.classes.names == ("jump", "run", "swim", "walk")
    assert [r.label for r in dm.datasets["test"].records] == [0, 1, 2, 3, 0]


def test_setup_never_generates_data(tmp_path):
    cfg = config(tmp_path / "nothing", "data.exclude=null")
    with pytest.raises(ValueError, match="cannot read the list"):
        VideoDataModule(cfg).setup("fit")
    assert not (tmp_path / "nothing").exists()
