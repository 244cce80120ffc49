"""Watching a sweep: readable run names, TensorBoard kept out of the run id, epoch and val
top-1 of unfinished runs in ``--status``, and ``--no-wait`` submitting through submitit."""

import json
import os
from pathlib import Path

import pytest

from nlrepro.cli import main as cli
from nlrepro.config import ConfigError, load_config
from nlrepro.run import rundir
from nlrepro.run.identity import config_hash
from nlrepro.run.tracking import run_name
from nlrepro.sweep import expand, grid_path, load_grid, write_spec


def test_runs_have_readable_names_beside_their_ids(tmp_path):
    specs = expand(load_grid(grid_path("2a")), "proxy", tmp_path, seeds=[0, 1])
    names = [s.name for s in specs]
    assert "2a/Gaussian/R50/s0" in names and "2a/Gaussian, embed/R50/s1" in names
    assert len(set(names)) == len(names) == len({s.run_id for s in specs})
    write_spec(specs[1])
    row = json.loads((specs[1].run_dir / "row.json").read_text())
    assert row["name"] == specs[1].name and row["run_id"] == specs[1].run_id
    # A run outside a sweep: its output folder and its model.
    cfg = load_config("proxy", sets=["model.nonlocal.blocks=1", "model.nonlocal.instantiation="
                                     "gaussian", "seed=3", "model.depth=101"])
    assert run_name(cfg) == "adhoc/c2d-NL1-gaussian/R101/s3"
    assert run_name(cfg, "2z", ["a/b"]) == "2z/a-b/R101/s3"  # never an extra folder level


def test_loggers_are_checked_and_left_out_of_the_run_id():
    default = load_config("proxy")
    assert default.trainer.loggers == ["csv"]
    assert config_hash(load_config("proxy", sets=["trainer.loggers=[csv, tensorboard]"])) == \
        config_hash(default)
    with pytest.raises(ConfigError, match=r"trainer.loggers: 'wandb' is not valid.*tensorboard"):
        load_config("proxy", sets=["trainer.loggers=[csv, wandb]"])
    with pytest.raises(ConfigError, match="must hold 'csv'"):
        load_config("proxy", sets=["trainer.loggers=[tensorboard]"])


def test_tensorboard_events_go_under_readable_names(tmp_path):
    spec = _named(expand(load_grid(grid_path("2a")), "proxy", tmp_path / "results"),
                  "2a/Gaussian/R50/s0")
    tb = rundir.tensorboard_dir(spec.config, spec.run_dir, spec.name)
    assert tb == tmp_path / "results/proxy/tb/2a/Gaussian/R50/s0" / spec.run_id
    # A run in a folder of its own choosing keeps its events inside it.
    assert rundir.tensorboard_dir(spec.config, tmp_path / "mine", "n/R50/s0") == \
        tmp_path / "mine/tb/n/R50/s0"


def _named(specs: list, name: str):
    return next(s for s in specs if s.name == name)


def _status(grid: str, results: Path, capsys) -> str:
    capsys.readouterr()
    assert cli(["sweep", str(grid_path(grid)), "--profile", "proxy", "--results", str(results),
                "--status"]) == 0
    return capsys.readouterr().out


def test_status_shows_each_unfinished_runs_epoch_and_latest_val_top1(tmp_path, capsys):
    results = tmp_path / "results"
    specs = expand(load_grid(grid_path("2a")), "proxy", results)
    running = _named(specs, "2a/Gaussian/R50/s0")
    fresh = _named(specs, "2a/dot-product/R50/s0")
    for s in (running, fresh):
        write_spec(s)
    rundir.checkpoint_dir(running.run_dir).mkdir()
    rundir.metrics_csv(running.run_dir).write_text(
        "epoch,step,train/loss,val/loss,val/top1_clip\n"
        "0,2,1.3,,\n0,2,,1.2,0.25\n1,5,1.1,,\n1,5,,1.0,0.4375\n2,7,0.9,,\n")
    out = _status("2a", results, capsys)
    line = next(ln for ln in out.splitlines() if running.run_id in ln)
    max_epochs = running.config.trainer.max_epochs
    assert "2a/Gaussian/R50/s0" in line and "incomplete" in line
    assert f"3/{max_epochs}" in line and "43.75" in line
    fresh_line = next(ln for ln in out.splitlines() if fresh.run_id in ln)
    assert "not launched" in fresh_line and "None" not in fresh_line
    # A metrics file caught mid-write reads as nothing, it does not break the status.
    rundir.metrics_csv(running.run_dir).write_bytes(b"epoch,step\n0,\"2")
    assert running.run_id in _status("2a", results, capsys)


def _stand_in_slurm(bin_dir: Path, monkeypatch: pytest.MonkeyPatch, sbatch: str) -> None:
    """Put a stand-in ``sbatch`` (this body) and ``srun`` first on PATH. submitit's executor
    refuses to start where no ``srun`` exists; the stand-in fails if anything runs it, since a
    job's srun runs on the cluster, never in the submitting process."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\n{sbatch}")
    (bin_dir / "srun").write_text("#!/bin/sh\necho 'srun: not a cluster' >&2\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_no_wait_submits_through_submitit_and_returns(tmp_path, capsys, monkeypatch):
    """No cluster here: a stand-in sbatch answers as SLURM does; nothing may wait on a job
    (no sacct or squeue exists, so waiting would never end)."""
    bin_dir = tmp_path / "bin"
    _stand_in_slurm(bin_dir, monkeypatch, f"echo \"$@\" >> {bin_dir}/calls\n"
                                           "echo 'Submitted batch job 4242'\n")
    results = tmp_path / "results"
    argv = ["sweep", str(grid_path("2a")), "--profile", "proxy", "--launcher", "slurm",
            "--results", str(results), "--seeds", "0", "--set", f"data.root={tmp_path / 'p'}",
            "--no-wait"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 5 runs as SLURM job array 4242" in out
    assert len((bin_dir / "calls").read_text().splitlines()) == 1  # one array
    specs = expand(load_grid(grid_path("2a")), "proxy", results, [f"data.root={tmp_path / 'p'}"],
                   [0])
    assert [rundir.recorded_job(s.run_dir) for s in specs] == [f"4242_{i}" for i in range(5)]
    assert not any(rundir.is_done(s.run_dir) for s in specs)
    assert not (tmp_path / "p").exists()  # nothing trained or generated here
    # Only SLURM runs without the command.
    assert cli(argv[:5] + ["local"] + argv[6:]) == 2
    assert "--no-wait: only the SLURM launcher" in capsys.readouterr().err


def test_no_wait_leaves_runs_whose_parent_is_not_done(tmp_path, capsys, monkeypatch):
    _stand_in_slurm(tmp_path / "bin", monkeypatch, "echo 'Submitted batch job 77'\n")
    results = tmp_path / "results"
    assert cli(["sweep", str(grid_path("2g")), "--profile", "proxy", "--launcher", "slurm",
                "--results", str(results), "--seeds", "0", "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "wait for their parent runs (table 2f)" in out
    children = expand(load_grid(grid_path("2g")), "proxy", results, None, [0])
    assert all(rundir.recorded_job(s.run_dir) is None for s in children)
    assert all(rundir.recorded_job(s.depends_on.run_dir) for s in children)
