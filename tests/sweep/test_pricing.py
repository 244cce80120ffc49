"""Pricing a sweep: iterations, GPU-hours, requeues and wall-clock days from the launcher."""

import math

import pytest

from nlrepro.config import ConfigError, LauncherConfig, load_config
from nlrepro.info import model_info
from nlrepro.sweep.pricing import (KINETICS_TRAIN_VIDEOS, format_plan, load_throughput, price_runs,
                             schedule, totals)


def write_list(path, n):
    path.write_text("".join(f"train/a/v{i}.mp4 0\n" for i in range(n)))


@pytest.fixture
def data_root(tmp_path):
    write_list(tmp_path / "train.csv", 1000)
    write_list(tmp_path / "val.csv", 0)
    return tmp_path


def kinetics(root, *sets):
    return load_config("kinetics", sets=[f"data.root={root}", "trainer.precise_bn_batches=0",
                                         *sets])


def table(ref_gflops, **rates):
    return {"reference": {"model": "synthetic", "gflops": ref_gflops},
            "gpus": {name: {"clips_per_s": r, "source": "estimate", "reasoning": "test"}
                     for name, r in rates.items()}}


def test_arithmetic_requeues_and_days(data_root):
    """3 runs of 2.5 h wall on 8 GPUs, 1 h time limit, 2 runs at a time."""
    cfgs = [kinetics(data_root, "data.batch_size=4", "trainer.max_epochs=10", f"seed={s}")
            for s in range(3)]
    gmacs = model_info(cfgs[0])["gflops"]
    # 10 epochs x ceil(1000 / 32) = 320 iterations x 32 clips = 10,240 clips per run.
    # Reference twice as heavy: the run goes 2x the reference rate. 20 GPU-h per run:
    rate = 10_240 / (20 * 3600) / 2
    launcher = LauncherConfig(name="slurm", gpus_per_node=8, timeout_min=60,
                              array_parallelism=2, max_requeues=1)
    df = price_runs(cfgs, launcher, table(2 * gmacs, T1=rate), gpu="T1")
    assert list(df["iterations"]) == [320] * 3 and list(df["clips"]) == [10_240] * 3
    assert list(df["gpus"]) == [8] * 3 and list(df["global_batch"]) == [32] * 3
    assert df["gpu_hours"].tolist() == pytest.approx([20.0] * 3)
    assert df["wall_hours"].tolist() == pytest.approx([2.5] * 3)
    assert list(df["requeues"]) == [2, 2, 2]          # ceil(150 min / 60 min) - 1
    assert df["end_day"].tolist() == pytest.approx([2.5 / 24, 2.5 / 24, 5 / 24])
    t = totals(df)
    assert t["gpu_days"] == pytest.approx(60 / 24) and t["wall_days"] == pytest.approx(5 / 24)
    text = format_plan(df, title="Table 2x")
    assert "Table 2x costs 2.5 GPU-days (60 T1 GPU-hours" in text
    assert "wall-clock 0.2 days with 2 run(s) at a time; 6 requeue(s)" in text
    assert "3 run(s) need more than launcher.max_requeues=1" in text

    # The local launcher runs one at a time; a long time limit means no requeue.
    local = LauncherConfig(name="local", timeout_min=180)
    df = price_runs(cfgs, local, table(2 * gmacs, T1=rate), gpu="t1")
    assert list(df["requeues"]) == [0, 0, 0] and totals(df)["wall_days"] == pytest.approx(7.5 / 24)
    assert "WARNING" not in format_plan(df)


def test_evaluation_is_priced_as_forward_passes(data_root):
    write_list(data_root / "val.csv", 100)
    cfg = kinetics(data_root, "data.batch_size=4", "trainer.max_epochs=10",
                   "trainer.precise_bn_batches=5", "data.test_list=test.csv")
    write_list(data_root / "test.csv", 50)
    gmacs = model_info(cfg)["gflops"]
    df = price_runs([cfg], LauncherConfig(gpus_per_node=8), table(gmacs, T1=1.0), gpu="T1")
    # per epoch 1 val clip/video; test 10 clips x 3 crops of 256^2; precise BN 5 x 4 clips.
    evals = (100 * 10 + 50 * 30 * (256 / 224) ** 2 + 5 * 4) / 3
    assert df["gpu_hours"].iloc[0] * 3600 == pytest.approx(10_240 + evals)


def test_paper_schedule_and_default_video_count(tmp_path):
    cfg = kinetics(tmp_path / "missing")
    df = price_runs([cfg], cfg.launcher, load_throughput())
    assert df["train_videos"].iloc[0] == KINETICS_TRAIN_VIDEOS
    assert df["train_videos_source"].iloc[0] == "kinetics-400"
    assert df["global_batch"].iloc[0] == 64
    assert df["iterations"].iloc[0] == pytest.approx(400_000, rel=2e-3)  # 109 epochs ≈ 400k


def test_cost_grows_with_gflops(data_root):
    cfgs = [kinetics(data_root, *s) for s in
            ([], ["model.depth=101"], ["model.arch=i3d_3x1x1"], ["model.arch=i3d_3x3x3"])]
    df = price_runs(cfgs, LauncherConfig(gpus_per_node=8), load_throughput(), gpu="V100")
    order = df["gflops"].argsort().tolist()
    assert df["gpu_hours"].argsort().tolist() == order
    # Same iterations: GPU-hours are proportional to GMACs.
    ratio = df["gpu_hours"] / df["gflops"]
    assert ratio.tolist() == pytest.approx([ratio.iloc[0]] * len(df))
    assert df["gflops"].iloc[1] > 1.5 * df["gflops"].iloc[0]  # R101 is heavier than R50


def test_gpu_choice_and_unknown_gpu(data_root):
    cfg = kinetics(data_root)
    tbl = load_throughput()
    with pytest.raises(ConfigError, match=r"unknown GPU type 'P100'; valid types: A100, H100, "
                                          r"V100"):
        price_runs([cfg], cfg.launcher, tbl, gpu="P100")
    by_constraint = LauncherConfig(name="slurm", gpus_per_node=8, constraint="h100&ib")
    assert price_runs([cfg], by_constraint, tbl).attrs["gpu"] == "H100"
    assert price_runs([cfg], LauncherConfig(gpus_per_node=8), tbl).attrs["gpu"] == tbl["default"]


def test_shipped_table_is_complete_and_matches_its_reference():
    tbl = load_throughput()
    assert set(tbl["gpus"]) == {"V100", "A100", "H100"}
    for entry in tbl["gpus"].values():
        assert entry["source"] == "estimate" and len(entry["reasoning"]) > 40
    ref = model_info(load_config("kinetics"))["gflops"]
    assert tbl["reference"]["gflops"] == pytest.approx(ref, rel=0.01)


def test_bad_tables_are_refused(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("reference: {gflops: 20}\ngpus: {X: {clips_per_s: 5, source: guess, "
                   "reasoning: r}}\n")
    with pytest.raises(ConfigError, match=r"gpus.X.source: 'guess' is not valid; choose one of "
                                          r"\['estimate', 'measured'\]"):
        load_throughput(bad)
    bad.write_text("reference: {gflops: 20}\ngpus: {X: {clips_per_s: 0, source: estimate, "
                   "reasoning: r}}\n")
    with pytest.raises(ConfigError, match="gpus.X.clips_per_s must be > 0, got 0"):
        load_throughput(bad)


def test_schedule_fills_slots_in_order():
    assert schedule([3, 1, 1, 2], 2) == [(0, 3), (0, 1), (1, 2), (2, 4)]
    assert schedule([1, 1], 1) == [(0, 1), (1, 2)]
    assert math.isclose(max(e for _, e in schedule([5] * 7, 3)), 15)


def test_sweep_dry_run_prints_the_priced_plan(tmp_path, capsys):
    from nlrepro.cli import main as cli

    grid = tmp_path / "table9z.yaml"
    grid.write_text("table: 9z\nseeds: [0]\nrows:\n"
                    "  - {label: base, set: {model.arch: c2d}}\n"
                    "  - {label: i3d, set: {model.arch: i3d_3x1x1}}\n")
    rc = cli(["sweep", str(grid), "--profile", "kinetics", "--dry-run",
              "--results", str(tmp_path / "results"), "--set", f"data.root={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Table 9z costs" in out and "A100 GPU-hours, estimate throughput) for 2 runs" in out
    assert "399703" in out  # the paper's ≈400k iterations, for each row
