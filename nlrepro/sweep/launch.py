"""Run a sweep's run folders here (one after another) or on SLURM (one job array).

Both launchers only ever call :func:`nlrepro.run.train.train_run_dir`, which resumes
from ``checkpoints/last.ckpt`` and skips a run whose ``done`` marker exists, so
launching twice, a crash, a requeue or a Ctrl-C never costs more than the epoch
in flight.  A failing run is recorded in its :class:`RunOutcome` and the others
go on.

On SLURM, submitit alone owns requeueing: :class:`TrainJob` is a
``Checkpointable`` whose ``checkpoint()`` hands back a fresh job for the same
folder; Lightning's SLURM plugin runs with ``auto_requeue=False`` (see run/train.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from tqdm import tqdm

from nlrepro.config import ConfigError, LauncherConfig, RunConfig
from nlrepro.run import rundir
from nlrepro.run.train import train_run_dir
from nlrepro.sweep.workers import Stopped, die_with_parent, stop_signals_raise, stop_workers
from nlrepro.utils import setup_logging

log = logging.getLogger("nlrepro.launch")


@dataclass
class RunOutcome:
    """How one run folder ended: ``ok``, or the one-line ``error`` (details in its logs)."""

    run_dir: Path
    ok: bool
    error: str | None
    job_id: str | None = None


# ---- progress ---------------------------------------------------------------------------
class _Progress:
    """Runs done / total with elapsed time and an estimate: a tqdm bar in a terminal,
    one plain line per finished run otherwise (CI logs, SLURM output files)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self.failed = total, desc, 0, 0
        self.t0 = time.time()
        self.bar = tqdm(total=total, desc=desc, unit="run", file=sys.stdout,
                        dynamic_ncols=True) if sys.stdout.isatty() else None

    def advance(self, outcome: RunOutcome) -> None:
        self.done += 1
        self.failed += not outcome.ok
        what = "ok" if outcome.ok else f"FAILED: {outcome.error}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed)
            if not outcome.ok:
                self.bar.write(f"{outcome.run_dir.name} {what}")
            return
        elapsed = time.time() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        print(f"[{self.desc}] {self.done}/{self.total} runs finished ({self.failed} failed), "
              f"elapsed {_hms(elapsed)}, ~{_hms(left)} left; {outcome.run_dir.name} {what}",
              flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


# ---- local ------------------------------------------------------------------------------
def _train_one(run_dir: Path) -> RunOutcome:
    try:
        train_run_dir(run_dir)
        return RunOutcome(run_dir, True, None)
    except Exception:  # noqa: BLE001 - one bad run must not stop the sweep
        error = _last_line(traceback.format_exc())
        log.error("run %s failed: %s", run_dir, error)
        return RunOutcome(run_dir, False, error)


def launch_local(run_dirs: Sequence[Path], workers: int = 1) -> list[RunOutcome]:
    """Train the runs on this machine; a crash does not stop the rest.

    ``workers`` > 1 trains that many runs side by side in spawned processes (each run keeps
    its own seed, so results do not depend on the pool).  SIGTERM, SIGINT (Ctrl-C) and
    SIGHUP stop the sweep and its workers, and a worker whose sweep was killed exits
    (nlrepro/sweep/workers.py); neither is recorded as a failed run.
    """
    progress = _Progress(len(run_dirs), "local")
    outcomes: list[RunOutcome] = []
    try:
        if workers <= 1:
            for run_dir in map(Path, run_dirs):
                outcomes.append(_train_one(run_dir))
                progress.advance(outcomes[-1])
        else:
            outcomes = _pool(run_dirs, workers, progress)
    finally:
        progress.close()
    return outcomes


def _pool(run_dirs: Sequence[Path], workers: int, progress: _Progress) -> list[RunOutcome]:
    """The runs in ``workers`` spawned processes that die with this one."""
    outcomes: list[RunOutcome] = []
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        with stop_signals_raise():
            futures = [pool.submit(_train_one, Path(d)) for d in run_dirs]
            for future in as_completed(futures):
                outcomes.append(future.result())
                progress.advance(outcomes[-1])
    except BaseException as err:
        stop_workers(dict(pool._processes or {}))  # noqa: SLF001 - the pool has no public list
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(err, Stopped):
            print(f"sweep {err}: stopped its workers; rerun it to resume", file=sys.stderr,
                  flush=True)
            raise SystemExit(128 + err.signum) from None
        raise
    pool.shutdown(wait=True)
    order = {Path(d): i for i, d in enumerate(run_dirs)}
    outcomes.sort(key=lambda o: order[Path(o.run_dir)])
    return outcomes


# ---- SLURM ------------------------------------------------------------------------------
class TrainJob(submitit.helpers.Checkpointable):
    """One run folder as a SLURM job; requeued by submitit on preemption or time-out."""

    def __call__(self, run_dir: str) -> dict:
        # A root handler shows the libraries' lines (submitit's preemption and requeue
        # messages); nlrepro's lines go through nlrepro's own handler only, since with
        # propagation both handlers would print each of them in the job's log.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        setup_logging()
        logging.getLogger("nlrepro").propagate = False
        return train_run_dir(Path(run_dir))

    def checkpoint(self, run_dir: str) -> submitit.helpers.DelayedSubmission:
        # Nothing to save here: Lightning writes last.ckpt every epoch and a fresh
        # TrainJob on the same folder resumes from it.
        return submitit.helpers.DelayedSubmission(TrainJob(), run_dir)


def _positive(launcher: LauncherConfig, key: str, minimum: int) -> None:
    value = getattr(launcher, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"launcher.{key}: {value!r} must be an integer >= {minimum}")


def validate_local(launcher: LauncherConfig) -> None:
    """The local launcher's one setting, checked like the SLURM ones."""
    _positive(launcher, "local_workers", 1)


def validate_launcher(launcher: LauncherConfig, runs: Sequence[RunConfig] = ()) -> None:
    """Reject a launcher config SLURM would refuse or misuse, before anything is submitted."""
    for key, minimum in (("timeout_min", 1), ("cpus_per_task", 1), ("gpus_per_node", 0),
                         ("tasks_per_node", 0),
                         ("mem_gb", 0), ("array_parallelism", 1), ("signal_delay_s", 0),
                         ("max_requeues", 0)):
        _positive(launcher, key, minimum)
    if launcher.signal_delay_s >= launcher.timeout_min * 60:
        raise ConfigError(f"launcher.signal_delay_s: {launcher.signal_delay_s} s must be shorter "
                          f"than launcher.timeout_min ({launcher.timeout_min} min)")
    shapes = {_tasks_per_node(launcher, cfg) for cfg in runs}
    if len(shapes) > 1:
        raise ConfigError(f"one job array needs one shape; these runs ask for (tasks per node, "
                          f"nodes) {sorted(shapes)}: set trainer.devices/num_nodes alike")
    if not shutil.which("sbatch"):
        raise ConfigError("launcher.name: 'slurm' needs SLURM's sbatch/sacct on PATH (and "
                          "SLURM_CONF if slurm.conf is not in /etc/slurm); valid here: 'local'")
    if launcher.partition:
        partitions = _partitions()
        if partitions is not None and launcher.partition not in partitions:
            raise ConfigError(f"launcher.partition: {launcher.partition!r} is not a partition of "
                              f"this cluster; valid: {sorted(partitions)}")


def _partitions() -> set[str] | None:
    """The cluster's partitions (None when sinfo cannot tell)."""
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(res.stdout.split()) if res.returncode == 0 else None


def _tasks_per_node(launcher: LauncherConfig, cfg: RunConfig) -> tuple[int, int]:
    """(tasks per node, nodes): one task per GPU, as Lightning's SLURM environment expects."""
    devices, nodes = cfg.trainer.devices, cfg.trainer.num_nodes
    if launcher.tasks_per_node:
        return _explicit_tasks(launcher, devices), nodes
    if launcher.gpus_per_node == 0:
        if isinstance(devices, int) and devices > 1:
            raise ConfigError(f"trainer.devices: {devices} ranks in a CPU job need "
                              f"launcher.tasks_per_node={devices} (one SLURM task per rank)")
        return 1, nodes
    if not isinstance(devices, int) or not 1 <= devices <= launcher.gpus_per_node:
        raise ConfigError(f"trainer.devices: {devices!r} must be an integer in "
                          f"1..{launcher.gpus_per_node} (launcher.gpus_per_node) under SLURM, "
                          "which starts one task per GPU")
    return devices, nodes


def _explicit_tasks(launcher: LauncherConfig, devices: Any) -> int:
    """``launcher.tasks_per_node``, checked against what Lightning will ask SLURM for."""
    tasks = launcher.tasks_per_node
    if devices != tasks:
        raise ConfigError(f"launcher.tasks_per_node: {tasks} must equal trainer.devices "
                          f"({devices!r}): Lightning runs one DDP rank per SLURM task")
    if launcher.gpus_per_node and tasks > launcher.gpus_per_node:
        raise ConfigError(f"launcher.tasks_per_node: {tasks} is more than launcher."
                          f"gpus_per_node ({launcher.gpus_per_node}): one task per GPU")
    return tasks


def make_executor(launcher: LauncherConfig, folder: Path,
                  shape: tuple[int, int] = (1, 1)) -> submitit.AutoExecutor:
    """A SLURM executor writing its pickles and logs to ``folder/<job id>``."""
    executor = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster="slurm",
                                     slurm_max_num_timeout=launcher.max_requeues)
    params: dict[str, Any] = {
        "name": "nlrepro", "timeout_min": launcher.timeout_min,
        "cpus_per_task": launcher.cpus_per_task, "tasks_per_node": shape[0], "nodes": shape[1],
        "slurm_array_parallelism": launcher.array_parallelism,
        "slurm_signal_delay_s": launcher.signal_delay_s,
    }
    # Only what is set: an unset partition/account means the cluster's default.
    optional = {"slurm_partition": launcher.partition, "slurm_account": launcher.account,
                "slurm_constraint": launcher.constraint,
                "gpus_per_node": launcher.gpus_per_node or None,
                "mem_gb": launcher.mem_gb or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    return executor


def job_error(exc: BaseException, job: Any) -> str:
    """One line for a failed task: the exception's last line, and where its log is."""
    text = str(exc)
    if isinstance(exc, submitit.core.utils.FailedJobError) and "----" in text:
        trace = text.split("----------------------")[1]
        text = _last_line(trace)
    else:
        text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{text} (log: {job.paths.stderr})"


def wait_jobs(jobs: Sequence[Any], on_done: Callable[[int], None], poll_s: float = 2.0) -> None:
    """Call ``on_done(i)`` as each job finishes, in completion order."""
    pending = set(range(len(jobs)))
    while pending:
        for i in sorted(pending):
            if jobs[i].done():
                pending.discard(i)
                on_done(i)
        if pending:
            time.sleep(poll_s)


def submit_array(fn: Callable, args: Sequence[Any], launcher: LauncherConfig, folder: Path,
                 shape: tuple[int, int] = (1, 1)) -> list[Any]:
    """Submit ``fn(arg)`` for every arg as one SLURM job array; the submitit jobs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = make_executor(launcher, folder, shape)
    return executor.map_array(fn, list(args))


def _queued_job_ids() -> set[str]:
    """This user's pending/running SLURM jobs, one id per array task (empty if unknown)."""
    try:
        res = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(res.stdout.split()) if res.returncode == 0 else set()


def launch_slurm(run_dirs: Sequence[Path], launcher: LauncherConfig,
                 folder: Path, poll_s: float = 2.0, wait: bool = True) -> list[RunOutcome]:
    """Submit the runs as one job array, wait for all of them, report each.

    ``wait=False`` (``sweep --no-wait``) returns right after submitting, with no outcomes:
    the jobs go on and ``sweep --status`` follows them.

    ``folder`` (under the results tree, shared with the compute nodes) holds
    submitit's pickles and logs, one sub-folder per job.  Each run folder gets a
    ``job.txt`` with its job id for ``nlrepro sweep --status``.  A run whose
    recorded job is still queued or running (the sweep was interrupted, not its
    jobs) is not submitted twice: the launcher waits for that job instead.
    """
    run_dirs = [Path(d).resolve() for d in run_dirs]
    if not run_dirs:
        return []
    runs = [rundir.read_run_config(d) for d in run_dirs]
    validate_launcher(launcher, runs)
    queued = _queued_job_ids()
    jobs: list[Any] = [None] * len(run_dirs)
    for i, run_dir in enumerate(run_dirs):
        job_id = rundir.recorded_job(run_dir)
        if job_id in queued:
            jobs[i] = submitit.SlurmJob(folder=Path(folder).resolve() / "%j", job_id=job_id)
    new = [i for i, job in enumerate(jobs) if job is None]
    if len(new) < len(jobs):
        print(f"{len(jobs) - len(new)} runs already queued or running: waiting for "
              f"{', '.join(jobs[i].job_id for i in range(len(jobs)) if i not in new)}",
              flush=True)
    if new:
        submitted = submit_array(TrainJob(), [str(run_dirs[i]) for i in new], launcher,
                                 Path(folder).resolve(), _tasks_per_node(launcher, runs[0]))
        for i, job in zip(new, submitted):
            jobs[i] = job
            rundir.record_job(run_dirs[i], job.job_id)
        print(f"submitted {len(submitted)} runs as SLURM job array "
              f"{submitted[0].job_id.split('_')[0]} (logs: {Path(folder).resolve()})", flush=True)
    if not wait:
        return []

    progress = _Progress(len(jobs), "slurm")
    outcomes: list[RunOutcome | None] = [None] * len(jobs)

    def finished(i: int) -> None:
        job = jobs[i]
        exc = job.exception()
        outcome = RunOutcome(run_dirs[i], exc is None, None if exc is None else job_error(exc, job),
                             job.job_id)
        outcomes[i] = outcome
        progress.advance(outcome)

    try:
        wait_jobs(jobs, finished, poll_s)
    finally:
        progress.close()
    return [o for o in outcomes if o is not None]
