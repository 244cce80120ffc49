"""How long the local SLURM test cluster takes: bring-up, one job, a job array, a requeue.

Standalone: ``python benchmarks/bench_slurm.py`` (root, Debian; installs the packages
when missing).  Writes ``results/bench/slurm.csv`` and ``results/bench/slurm.md``.
Exits 0 with a message where no cluster can be brought up.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

import cluster as slurm  # noqa: E402
import jobs  # noqa: E402

from nlrepro.config import LauncherConfig  # noqa: E402
from nlrepro.sweep.launch import submit_array  # noqa: E402

cloudpickle.register_pickle_by_value(jobs)
OUT = ROOT / "results" / "bench"
LAUNCHER = LauncherConfig(name="slurm", cpus_per_task=1, timeout_min=60, signal_delay_s=30)
REPEATS = 5


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def one_job(folder: Path) -> None:
    (job,) = submit_array(jobs.Square(refuse=-1), [3], LAUNCHER, folder)
    assert job.result() == 9


def array(folder: Path, n: int = 10) -> None:
    submitted = submit_array(jobs.Square(refuse=-1), list(range(n)), LAUNCHER, folder)
    assert [j.result() for j in submitted] == [x * x for x in range(n)]


def requeue(cluster: slurm.SlurmCluster, folder: Path) -> float:
    """Seconds from ``scancel --signal=USR2`` to the requeued job running again."""
    marker, release = folder / "marker", folder / "release"
    folder.mkdir(parents=True, exist_ok=True)
    (job,) = submit_array(jobs.Patient(str(release)), [str(marker)], LAUNCHER, folder)
    while not marker.exists():
        time.sleep(0.05)
    t = time.perf_counter()
    cluster.run("scancel", "--signal=USR2", job.job_id)
    while marker.read_text().split()[1] != "1":
        time.sleep(0.05)
    dt = time.perf_counter() - t
    release.write_text("")
    assert job.result()["restarts"] == 1
    return dt


def main() -> int:
    reason = slurm.unavailable_reason()
    if reason:
        print(f"bench_slurm: skipped, {reason}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="nlrepro-slurm-"))
    root.chmod(0o755)
    install = slurm.ensure_packages(root / "apt.log")
    t = time.perf_counter()
    cluster = slurm.SlurmCluster(root).start()
    rows = [{"what": "install packages (0 = already there)", "n": 1, "median_s": install},
            {"what": "bring-up (munge, MariaDB, slurmdbd, slurmctld, slurmd)", "n": 1,
             "median_s": time.perf_counter() - t}]
    try:
        os.environ["SLURM_CONF"] = str(cluster.conf)
        work = root / "jobs"
        single = [_timed(lambda i=i: one_job(work / f"one{i}")) for i in range(REPEATS)]
        arrays = [_timed(lambda i=i: array(work / f"arr{i}")) for i in range(3)]
        requeues = [requeue(cluster, work / f"rq{i}") for i in range(2)]
    finally:
        cluster.stop()
    rows += [{"what": "1 trivial job, submit -> result", "n": len(single),
              "median_s": statistics.median(single)},
             {"what": "10-task array on 2 CPUs, submit -> all results", "n": len(arrays),
              "median_s": statistics.median(arrays)},
             {"what": "USR2 -> requeued job running again (cred_expire=10)", "n": len(requeues),
              "median_s": statistics.median(requeues)}]
    df = pd.DataFrame(rows)
    ratio = statistics.median(arrays) / (10 * statistics.median(single))
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "slurm.csv", index=False)
    md = [f"# Local SLURM test cluster ({platform.node()}, {os.cpu_count()} CPUs)", "",
          df.round(2).to_markdown(index=False), "",
          f"A 10-task array takes {ratio:.2f}x the time of 10 single jobs run one after "
          "another (10 x the single-job median; same run).", ""]
    (OUT / "slurm.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
