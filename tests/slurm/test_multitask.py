"""Multi-task SLURM jobs: one DDP rank per srun task (CPU, gloo), preempted and requeued.

A run with ``trainer.devices=2`` and ``launcher.tasks_per_node=2`` is one SLURM job with two
tasks; Lightning's SLURM environment takes each rank from its task (``SLURM_PROCID``), so
each rank writes its own submitit log (``<job>_<task>_log.err``); a rank spawned by Lightning
itself would log into task 0's file.  Submitted by ``nlrepro sweep`` as a job array.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from waits import preempt_first_checkpointed, sacct_states, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

GRID = """\
table: 2a
title: "two rows of Table 2a, tiny, 2 ranks each"
seeds: [0]
base: {model.arch: c2d, model.depth: 50, model.nonlocal.stages: [res4]}
rows:
  - {label: "C2D baseline", set: {model.nonlocal.blocks: 0}}
  - {label: "Gaussian, embed", set: {model.nonlocal.blocks: 1}}
"""
# Long enough that the first run is still training when it is preempted after its first
# checkpoint (an epoch of 2 ranks takes about 0.5 s here).
EPOCHS = 20
RESUME = re.compile(r"rank (\d) of 2 resumes from (\S+) at epoch (\d+), step (\d+)")


def nlrepro(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "nlrepro", *args], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_two_task_runs_resume_on_both_ranks_after_preemption(slurm_cluster, tmp_path):
    from nlrepro.config import load_config
    from nlrepro.proxy.dataset import ensure_proxy_data
    from nlrepro.proxy.pretrain import ensure_frame_pretrained

    results, grid = tmp_path / "results", tmp_path / "table2a.yaml"
    grid.write_text(GRID)
    sets = ["data.proxy.num_train=64", "data.proxy.num_val=16", "data.proxy.num_test=16",
            "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
            "data.batch_size=8", f"data.root={tmp_path / 'proxy'}", "trainer.threads=1",
            f"trainer.max_epochs={EPOCHS}", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "launcher.tasks_per_node=2", "launcher.cpus_per_task=1",
            "launcher.timeout_min=60", "launcher.signal_delay_s=30"]
    # Every task of both jobs would otherwise race to write the same videos and weights.
    ensure_proxy_data(load_config("proxy", sets=sets))
    ensure_frame_pretrained(load_config("proxy", sets=sets))
    cmd = [sys.executable, "-m", "nlrepro", "sweep", str(grid), "--profile", "proxy",
           "--launcher", "slurm", "--results", str(results), *[f"--set={s}" for s in sets]]
    t0 = time.time()
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    table_dir = results / "proxy" / "2a"

    victim, job_id = preempt_first_checkpointed(slurm_cluster, sweep, table_dir, 400)
    out, _ = sweep.communicate(timeout=600)
    wall = time.time() - t0
    assert sweep.returncode == 0, out
    assert "submitted 2 runs as SLURM job array" in out and "2 done" in out, out

    wait_for(lambda: sacct_states(slurm_cluster, job_id)[-1:] == ["COMPLETED"], 60,
             f"job {job_id} to be recorded")
    states = sacct_states(slurm_cluster, job_id)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states

    # One log per srun task; task 0 saw the signal and requeued, task 1 did not requeue, both
    # resumed. Task 1 may be cancelled by the requeue before its handler runs (its Python
    # signal handler waits while it is blocked in a gloo collective with task 0), so its
    # log need not show the signal; when it does, it must show that it left the requeue to 0.
    logs = {int(p.name.split("_")[-2]): p.read_text()  # <array job>_<task>_log.err
            for p in (table_dir / ".submitit" / job_id).glob("*_log.err")}
    assert sorted(logs) == [0, 1], sorted(logs)
    assert "this job is preempted" in logs[0] and "Requeued job" in logs[0], logs[0]
    assert "Requeued job" not in logs[1], logs[1]
    if "this job is preempted" in logs[1]:
        assert "Not checkpointing nor requeuing since I am a slave (procid=1)" in logs[1]
    # set(): the job's root logger and nlrepro's own handler both print each line.
    resumes = {rank: sorted(set(RESUME.findall(text))) for rank, text in logs.items()}
    assert [m[0] for m in resumes[0]] == ["0"] and [m[0] for m in resumes[1]] == ["1"], resumes
    (_, path0, epoch0, step0), (_, path1, epoch1, step1) = resumes[0][0], resumes[1][0]
    assert path0 == path1 == str(victim / "checkpoints" / "last.ckpt")
    assert (epoch0, step0) == (epoch1, step1) and int(epoch0) < EPOCHS - 1

    summaries = {p.parent: json.loads(p.read_text()) for p in table_dir.glob("*/summary.json")}
    assert len(summaries) == 2 and victim in summaries
    other = next(r for r in summaries if r != victim)
    assert summaries[victim]["resumed"] and not summaries[other]["resumed"]
    assert {s["world_size"] for s in summaries.values()} == {2}
    # 64 videos / (8 per rank x 2 ranks) = 4 steps per epoch, on both runs.
    assert summaries[victim]["steps"] == summaries[other]["steps"] == EPOCHS * 4
    for s in summaries.values():
        assert s["metrics"]["test/videos"] == 16 and s["metrics"]["test/views"] == 16

    nlrepro("collect", "--profile", "proxy", "--results", str(results))
    table = nlrepro("table", "2a", "--profile", "proxy", "--results", str(results),
                    "--out", str(tmp_path / "tables"), "--no-plots")
    for label in ("C2D baseline", "Gaussian, embed"):
        line = next(ln for ln in table.splitlines() if f"| {label} " in ln)
        assert "1/3" in line
    print(f"2-run sweep of 2-task jobs with a preemption: {wall:.1f}s", file=sys.stderr)
