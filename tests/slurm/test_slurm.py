"""submitit on a real single-node SLURM cluster: job arrays, failures, requeue, sweeps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cloudpickle
import pytest

import jobs
from waits import preempt_first_checkpointed, sacct_states, wait_for
from nlrepro.config import ConfigError, LauncherConfig
from nlrepro.sweep.launch import (job_error, launch_slurm, make_executor, submit_array,
                            validate_launcher, wait_jobs)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

# The job's Python cannot import the tests: ship these callables inside the pickle.
cloudpickle.register_pickle_by_value(jobs)

SMALL = LauncherConfig(name="slurm", cpus_per_task=1, timeout_min=60, signal_delay_s=30)


def final_states(cluster, job_id: str, timeout: float = 60) -> list[str]:
    """``sacct_states`` once the job has ended (the result file can precede the record)."""
    wait_for(lambda: sacct_states(cluster, job_id)[-1:] not in
             ([], ["PENDING"], ["RUNNING"], ["COMPLETING"]), timeout, f"job {job_id} to end")
    return sacct_states(cluster, job_id)


def test_job_array_returns_results_and_isolates_a_failure(slurm_cluster, tmp_path):
    t0 = time.time()
    inputs = [0, 1, 2, 3, 4]
    submitted = submit_array(jobs.Square(refuse=3), inputs, SMALL, tmp_path / "submitit")
    array_ids = {j.job_id.split("_")[0] for j in submitted}
    assert len(submitted) == 5 and len(array_ids) == 1, [j.job_id for j in submitted]
    order: list[int] = []
    wait_jobs(submitted, order.append, poll_s=0.5)
    elapsed = time.time() - t0
    assert sorted(order) == inputs
    for x, job in zip(inputs, submitted):
        exc = job.exception()
        if x == 3:
            assert exc is not None and "ValueError: refusing input 3" in job_error(exc, job)
            assert str(job.paths.stderr) in job_error(exc, job)
        else:
            assert exc is None and job.result() == x * x
    # Logs land in the folder asked for, one sub-folder per job (``%j``).
    assert all(Path(j.paths.folder).parent == tmp_path / "submitit" for j in submitted)
    assert final_states(slurm_cluster, submitted[3].job_id) == ["FAILED"]
    assert final_states(slurm_cluster, submitted[0].job_id) == ["COMPLETED"]
    print(f"5-task array: {elapsed:.1f}s", file=sys.stderr)


def test_checkpointable_job_is_requeued_after_usr2(slurm_cluster, tmp_path):
    marker, release = tmp_path / "marker", tmp_path / "release"
    (job,) = submit_array(jobs.Patient(str(release)), [str(marker)], SMALL,
                          tmp_path / "submitit")
    wait_for(marker.exists, 60, "the job to start")
    assert marker.read_text().split()[1] == "0"
    t0 = time.time()
    slurm_cluster.run("scancel", "--signal=USR2", job.job_id)
    wait_for(lambda: marker.read_text().split()[1] == "1", 90, "the requeued job to restart")
    requeue_s = time.time() - t0
    release.write_text("")
    assert job.result() == {"restarts": 1, "released": True}
    states = final_states(slurm_cluster, job.job_id)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    assert "this job is preempted" in job.stderr()  # submitit's own log of the signal
    print(f"USR2 -> requeued -> restarted in {requeue_s:.1f}s", file=sys.stderr)


def test_launcher_config_is_checked_against_the_cluster(slurm_cluster):
    with pytest.raises(ConfigError, match=r"launcher.partition: 'gpu'.*valid: \['debug'\]"):
        validate_launcher(replace(SMALL, partition="gpu"))
    validate_launcher(replace(SMALL, partition="debug"))


def test_executor_passes_only_the_settings_that_are_set(slurm_cluster, tmp_path):
    def script(launcher: LauncherConfig, shape=(1, 1)) -> str:
        executor = make_executor(launcher, tmp_path, shape)
        return executor._executor._make_submission_file_text("true", "0")

    plain = script(SMALL)
    assert "#SBATCH --cpus-per-task=1" in plain and "#SBATCH --time=60" in plain
    assert "#SBATCH --signal=USR2@30" in plain and "#SBATCH --ntasks-per-node=1" in plain
    for unset in ("--partition", "--account", "--constraint", "--gpus-per-node", "--mem"):
        assert unset not in plain
    full = script(replace(SMALL, partition="debug", account="vision", constraint="volta32gb",
                          gpus_per_node=8, mem_gb=400), shape=(8, 2))
    for line in ("--partition=debug", "--account=vision", "--constraint=volta32gb",
                 "--gpus-per-node=8", "--mem=400GB", "--ntasks-per-node=8", "--nodes=2"):
        assert f"#SBATCH {line}" in full, line


def test_a_crashing_run_comes_back_as_its_error(slurm_cluster, tmp_path):
    from nlrepro.config import load_config
    from nlrepro.run.rundir import prepare_run_dir

    missing = tmp_path / "no-such-videos"
    cfg = load_config("proxy", sets=[f"data.root={missing}", "data.proxy=null",
                                     "model.pretrained=null", "trainer.threads=1"])
    run = prepare_run_dir(cfg, tmp_path / "results" / "run")
    (outcome,) = launch_slurm([run], SMALL, tmp_path / "results" / ".submitit", poll_s=0.5)
    assert not outcome.ok and str(missing) in outcome.error
    assert outcome.job_id == (run / "job.txt").read_text().strip()
    assert (run / "error.txt").is_file() and not (run / "done").exists()
    assert final_states(slurm_cluster, outcome.job_id) == ["FAILED"]


# ---- a real sweep through ``nlrepro sweep --launcher slurm`` -----------------------------
GRID = """\
table: 2a
title: "two rows of Table 2a, tiny"
seeds: [0]
base: {model.arch: c2d, model.depth: 50, model.nonlocal.stages: [res4]}
rows:
  - {label: "C2D baseline", set: {model.nonlocal.blocks: 0}}
  - {label: "Gaussian, embed", set: {model.nonlocal.blocks: 1}}
"""
# Enough epochs that a run is still training well after its first checkpoint, so that the
# preemption below lands before the run ends (an epoch takes 0.2 s on the tiny proxy data).
EPOCHS = 30


def _interruptible() -> None:
    """In the sweep's child process: Ctrl-C's default action.  A shell starts background
    jobs with SIGINT ignored, Python then installs no KeyboardInterrupt handler, and the
    SIGINT below would be ignored (CI started from ``cmd &`` failed that way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def nlrepro(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "nlrepro", *args], capture_output=True,
                         text=True, timeout=300)
    assert not check or res.returncode == 0, res.stdout + res.stderr
    return res


def test_sweep_on_slurm_survives_a_preemption(slurm_cluster, tmp_path):
    from nlrepro.config import load_config
    from nlrepro.proxy.dataset import ensure_proxy_data
    from nlrepro.proxy.pretrain import ensure_frame_pretrained

    results, grid = tmp_path / "results", tmp_path / "table2a.yaml"
    grid.write_text(GRID)
    sets = ["data.proxy.num_train=64", "data.proxy.num_val=32", "data.proxy.num_test=32",
            "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
            "data.batch_size=16", f"data.root={tmp_path / 'proxy'}", "trainer.threads=1",
            f"trainer.max_epochs={EPOCHS}", "launcher.cpus_per_task=1",
            "launcher.timeout_min=60", "launcher.signal_delay_s=30"]
    # Both array tasks would otherwise race to write the same proxy videos and weights.
    ensure_proxy_data(load_config("proxy", sets=sets))
    ensure_frame_pretrained(load_config("proxy", sets=sets))
    cmd = [sys.executable, "-m", "nlrepro", "sweep", str(grid), "--profile", "proxy",
           "--launcher", "slurm", "--results", str(results)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=_interruptible)

    # Preempt the first run that has saved an epoch, as a cluster would (USR2 to the job).
    table_dir = results / "proxy" / "2a"

    victim, job_id = preempt_first_checkpointed(slurm_cluster, sweep, table_dir, 300)
    # The sweep's own session dies too (its jobs do not): the same command run again
    # waits for the queued jobs instead of submitting them twice.
    sweep.send_signal(signal.SIGINT)
    first, _ = sweep.communicate(timeout=60)
    assert sweep.returncode != 0 and "submitted 2 runs as SLURM job array" in first, first
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "already queued or running: waiting for" in out and job_id in out, out
    assert "submitted" not in out, out
    wall = time.time() - t0
    runs = sorted(p.parent for p in table_dir.glob("*/summary.json"))
    assert len(runs) == 2 and victim in runs, out
    summaries = {r: json.loads((r / "summary.json").read_text()) for r in runs}
    other = next(r for r in runs if r != victim)
    assert summaries[victim]["resumed"] and not summaries[other]["resumed"]
    assert summaries[victim]["epochs"] == summaries[other]["epochs"] == EPOCHS
    assert summaries[victim]["steps"] == summaries[other]["steps"] == EPOCHS * 4
    states = final_states(slurm_cluster, job_id)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    log = next((results / "proxy" / "2a" / ".submitit").glob(f"{job_id}/*_log.err"))
    assert "this job is preempted" in log.read_text()
    assert "2 runs; 0 not launched, 0 incomplete, 2 done" in out

    status = nlrepro("sweep", str(grid), "--profile", "proxy", "--results", str(results),
                     "--status", *[f"--set={s}" for s in sets]).stdout
    assert job_id in status  # --status shows the job ids from job.txt

    nlrepro("collect", "--profile", "proxy", "--results", str(results))
    table = nlrepro("table", "2a", "--profile", "proxy", "--results", str(results),
                    "--out", str(tmp_path / "tables"), "--no-plots").stdout
    for label in ("C2D baseline", "Gaussian, embed"):
        line = next(ln for ln in table.splitlines() if f"| {label} " in ln)
        assert "1/3" in line  # one of the grid's three proxy seeds ran
        top1 = summaries[next(r for r in runs if label in json.loads(
            (r / "row.json").read_text())["labels"])]["metrics"]["test/top1_video"]
        assert f"{top1:.1f}" in line
    print(f"2-run sweep with a preemption: {wall:.1f}s\n{out}", file=sys.stderr)
