"""The local launcher on real run folders, and the SLURM launcher's config checks.

(Submitting to a real cluster is tested in tests/slurm/.)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nlrepro.config import ConfigError, LauncherConfig, load_config
from nlrepro.sweep.launch import launch_local, validate_launcher, validate_local
from nlrepro.run.rundir import prepare_run_dir

TINY = ["data.proxy.num_train=32", "data.proxy.num_val=16", "data.proxy.num_test=16",
        "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
        "data.batch_size=16", "data.num_workers=0", "trainer.threads=1",
        "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
SLURM = LauncherConfig(name="slurm", cpus_per_task=1, timeout_min=60, signal_delay_s=30)


@pytest.mark.slow
def test_local_launcher_reports_a_crash_and_runs_the_rest(tmp_path, capsys):
    missing = tmp_path / "no-such-videos"
    bad = prepare_run_dir(load_config("proxy", sets=[*TINY, f"data.root={missing}",
                                                     "data.proxy=null", "model.pretrained=null"]),
                          tmp_path / "bad")
    good = prepare_run_dir(load_config("proxy", sets=[*TINY, f"data.root={tmp_path / 'proxy'}"]),
                           tmp_path / "good")

    outcomes = launch_local([bad, good])

    assert [o.run_dir for o in outcomes] == [bad, good]
    assert not outcomes[0].ok and str(missing) in outcomes[0].error
    assert (bad / "error.txt").is_file() and not (bad / "done").exists()
    assert outcomes[1].ok and outcomes[1].error is None and (good / "done").is_file()
    assert json.loads((good / "summary.json").read_text())["epochs"] == 1
    out = capsys.readouterr().out  # not a terminal: one plain line per finished run
    assert "[local] 1/2 runs finished (1 failed)" in out
    assert "[local] 2/2 runs finished (1 failed)" in out

    # A second launch skips the finished run and fails the broken one again, quickly.
    again = launch_local([good, bad])
    assert [o.ok for o in again] == [True, False]


@pytest.mark.slow
def test_local_pool_trains_side_by_side_to_the_same_results(tmp_path):
    """Two worker processes give the runs exactly what one process gives them."""
    sets = [*TINY, f"data.root={tmp_path / 'proxy'}", "trainer.deterministic=true"]
    dirs = {w: [prepare_run_dir(load_config("proxy", sets=[*sets, f"seed={s}"]),
                                tmp_path / f"w{w}" / f"s{s}") for s in (0, 1)] for w in (1, 2)}
    for workers, runs in dirs.items():
        outcomes = launch_local(runs, workers=workers)
        assert [o.run_dir for o in outcomes] == runs and all(o.ok for o in outcomes)
    for one, two in zip(dirs[1], dirs[2]):
        a, b = (json.loads((d / "summary.json").read_text())["metrics"] for d in (one, two))
        assert a["test/top1_video"] == b["test/top1_video"]
        assert a["val/loss"] == pytest.approx(b["val/loss"], abs=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("timeout_min", 0, "launcher.timeout_min: 0 must be an integer >= 1"),
    ("cpus_per_task", 0, "launcher.cpus_per_task: 0 must be an integer >= 1"),
    ("gpus_per_node", -1, "launcher.gpus_per_node: -1 must be an integer >= 0"),
    ("array_parallelism", 0, "launcher.array_parallelism: 0"),
    ("signal_delay_s", 3600, "launcher.signal_delay_s: 3600 s must be shorter than "
                             "launcher.timeout_min (60 min)"),
])
def test_bad_slurm_settings_are_named(key, value, message):
    with pytest.raises(ConfigError) as err:
        validate_launcher(replace(SLURM, **{key: value}))
    assert message in str(err.value)


def test_one_task_per_gpu_needs_matching_devices():
    cfg = load_config("proxy", sets=["trainer.devices=auto"])
    with pytest.raises(ConfigError, match=r"trainer.devices: 'auto' must be an integer in 1..4"):
        validate_launcher(replace(SLURM, gpus_per_node=4), [cfg])
    two = load_config("proxy", sets=["trainer.devices=2"])
    four = load_config("proxy", sets=["trainer.devices=4"])
    with pytest.raises(ConfigError, match=r"one job array needs one shape.*\(2, 1\), \(4, 1\)"):
        validate_launcher(replace(SLURM, gpus_per_node=4), [two, four])


def test_slurm_without_sbatch_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="needs SLURM's sbatch.*valid here: 'local'"):
        validate_launcher(SLURM)


@pytest.mark.parametrize("value", [0, -2, "two"])
def test_bad_local_workers_are_named(value):
    with pytest.raises(ConfigError, match=rf"launcher\.local_workers: {value!r} must be an "
                                          r"integer >= 1"):
        validate_local(LauncherConfig(local_workers=value))


def test_a_slurm_job_logs_each_line_once():
    """TrainJob is what a SLURM job runs: nlrepro's log lines reach the job's log once (a
    root handler beside nlrepro's printed them twice), and other libraries' lines still
    reach it (submitit says there how it handled a preemption)."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from nlrepro.sweep import launch\n"
        "from nlrepro.utils import setup_logging\n"
        "def fake_train(run_dir):\n"
        "    setup_logging()  # as the real training driver does\n"
        "    logging.getLogger('nlrepro.run.train').info('one line')\n"
        "    logging.getLogger('submitit').info('a library line')\n"
        "launch.train_run_dir = fake_train\n"
        "launch.TrainJob()('some/run')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stderr
    assert err.count("one line") == 1, err
    assert err.count("a library line") == 1, err  # submitit's requeue messages still show
