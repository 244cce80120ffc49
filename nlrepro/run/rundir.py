"""THE run folder: its file names, its states, and every read and write of it.

A run lives in a fixed folder ``<output_dir>/<run id>`` (no timestamps, no auto-incremented
versions), so re-running the same command, or a requeued SLURM job, resumes from
``checkpoints/last.ckpt``, and a run with a ``done`` marker is never trained again::

    config.yaml          resolved config (what ran)
    row.json             which table row(s) the run reproduces (written by the sweep)
    checkpoints/last.ckpt
    metrics.csv          Lightning CSVLogger, whole history across resumes
    history.csv          rows of earlier attempts while a resumed run trains
    elapsed.json         training seconds so far (a killed attempt still counts)
    summary.json         written atomically at the end, then ``done``
    error.txt            traceback of the last crash, if any
    job.txt              SLURM job id of the run's last submission
    lock                 flock'ed by the process that trains the run (``run_lock``)
    tb/<name>/           TensorBoard events of a run outside its sweep's layout (see
                         ``tensorboard_dir``; a sweep's runs log to ``<results>/<profile>/tb``)

No other module spells these names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from nlrepro.config import RunConfig, read_config, save_config
from nlrepro.run.identity import config_hash
from nlrepro.utils import atomic_path, atomic_write_json, atomic_write_text, remove_dead

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
ROW = "row.json"
CKPT_DIR = "checkpoints"
LAST = "last.ckpt"
METRICS = "metrics.csv"
HISTORY = "history.csv"
ELAPSED = "elapsed.json"
SUMMARY = "summary.json"
DONE = "done"
ERROR = "error.txt"
JOB = "job.txt"
TEST_VIDEOS = "test_videos.csv"  # the multi-view test, one row per video
LOCK = "lock"
TB = "tb"

# not launched: no folder or nothing trained yet; incomplete: started, crashed or killed
# (it resumes from last.ckpt); done: the ``done`` marker exists.
STATES = ("not launched", "incomplete", "done")


def run_dir_for(cfg: RunConfig) -> Path:
    """Where ``nlrepro train`` puts a run: ``<output_dir>/<config hash>``."""
    return Path(cfg.output_dir) / config_hash(cfg)


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> Path:
    """Write ``config.yaml`` (once; a different config in the same folder is an error)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG
    if path.exists():
        old = read_config(path)
        if config_hash(old) != config_hash(cfg):
            raise ValueError(f"{run_dir} already holds a run with another config "
                             f"({config_hash(old)} != {config_hash(cfg)})")
    else:
        save_config(cfg, path)
    return run_dir


def read_run_config(run_dir: Path) -> RunConfig:
    return read_config(Path(run_dir) / CONFIG)


# ---- one trainer per run folder --------------------------------------------------------------
# ``flock`` on ``<run>/lock``, held for the run's whole life: the kernel releases it when the
# holder exits, however it exits (SIGKILL, OOM), so a stale lock never needs cleaning.  A
# second trainer of the same run *waits* for the first, then finds the run done and returns
# its summary (or resumes it, if the first died): two sweeps started on one results tree
# train every run once.  Only global rank 0 takes it: the other ranks of a multi-process run
# are started by it and would otherwise wait for it forever.
RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_rank_zero() -> bool:
    """True unless the environment says this is a non-zero rank of a multi-process run."""
    return all(os.environ.get(var, "0") == "0" for var in RANK_VARS)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid else "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the body; wait (and say so) while another process has it."""
    if not is_rank_zero():
        yield
        return
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("run %s is being trained by %s; waiting for it to finish",
                        run_dir, _holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def remove_dead_temporaries(run_dir: Path) -> list[Path]:
    """What killed attempts left half-written in the run folder and its checkpoints."""
    return [*remove_dead(Path(run_dir)), *remove_dead(Path(run_dir) / CKPT_DIR)]


# ---- state -------------------------------------------------------------------------------
def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).is_file()


def state(run_dir: Path) -> str:
    """One of ``STATES``."""
    run_dir = Path(run_dir)
    if is_done(run_dir):
        return "done"
    if (run_dir / CKPT_DIR).is_dir() or (run_dir / ERROR).is_file():
        return "incomplete"
    return "not launched"


def last_error(run_dir: Path) -> str | None:
    """The last line of the run's recorded crash, or None."""
    path = Path(run_dir) / ERROR
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "crashed"


def record_error(run_dir: Path, text: str) -> None:
    atomic_write_text(Path(run_dir) / ERROR, text)


def clear_error(run_dir: Path) -> None:
    (Path(run_dir) / ERROR).unlink(missing_ok=True)


# ---- files the run writes ------------------------------------------------------------------
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CKPT_DIR


def last_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/last.ckpt`` (it may not exist yet)."""
    return Path(run_dir) / CKPT_DIR / LAST


def tensorboard_dir(cfg: RunConfig, run_dir: Path, name: str) -> Path:
    """Where the run's TensorBoard events go, named so that ``tensorboard --logdir`` reads.

    A run in its own folder ``<output_dir>/<run id>`` (every sweep run:
    ``<results>/<profile>/<table>/<run id>``) logs to ``<results>/<profile>/tb/<name>/<run id>``,
    so ``tensorboard --logdir results/proxy/tb`` lists ``2a/Gaussian/R50/s0/<run id>``; a run
    trained in a folder of its own choosing (``--run-dir``) keeps them in ``<run>/tb/<name>``.
    """
    run_dir = Path(run_dir)
    if run_dir.name == config_hash(cfg) and run_dir.parent.name == Path(cfg.output_dir).name:
        return run_dir.parent.parent / TB / name / run_dir.name
    return run_dir / TB / name


def epoch_progress(run_dir: Path) -> dict[str, Any]:
    """How far a run's metrics got: ``epoch`` (the latest epoch logged, counted from 1) and
    ``val_top1`` (the latest clip top-1 on val, in percent); None where nothing is logged.
    A metrics file caught mid-write by a running trainer reads as nothing."""
    out: dict[str, Any] = {"epoch": None, "val_top1": None}
    try:
        df = logged(run_dir)
    except Exception:  # noqa: BLE001 - a partial CSV of a live run: try again next time
        return out
    if df is None:
        return out
    if "epoch" in df and df["epoch"].notna().any():
        out["epoch"] = int(df["epoch"].dropna().max()) + 1
    if "val/top1_clip" in df and df["val/top1_clip"].notna().any():
        out["val_top1"] = round(100.0 * float(df["val/top1_clip"].dropna().iloc[-1]), 2)
    return out


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def finish(run_dir: Path, summary: dict) -> None:
    """Write ``summary.json``, then the ``done`` marker (in that order: done means whole)."""
    atomic_write_json(Path(run_dir) / SUMMARY, summary)
    atomic_write_text(Path(run_dir) / DONE, "")


def write_row(run_dir: Path, row: dict) -> None:
    atomic_write_json(Path(run_dir) / ROW, row)


def read_row(run_dir: Path) -> dict | None:
    path = Path(run_dir) / ROW
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_csv(run_dir: Path) -> Path:
    return Path(run_dir) / METRICS


def load_elapsed(run_dir: Path) -> float:
    path = Path(run_dir) / ELAPSED
    return json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0


def save_elapsed(run_dir: Path, seconds: float) -> None:
    atomic_write_json(Path(run_dir) / ELAPSED, {"train_seconds": seconds})


def recorded_job(run_dir: Path) -> str | None:
    path = Path(run_dir) / JOB
    return path.read_text().strip() or None if path.is_file() else None


def record_job(run_dir: Path, job_id: str) -> None:
    atomic_write_text(Path(run_dir) / JOB, f"{job_id}\n")


# ---- metrics history across resumes ---------------------------------------------------------
def logged(run_dir: Path) -> Any:
    """history.csv (attempts before a resume) + metrics.csv (this attempt) as one frame,
    or None when neither holds anything yet."""
    import pandas as pd

    run_dir = Path(run_dir)
    parts = [pd.read_csv(p) for p in (run_dir / HISTORY, run_dir / METRICS)
             if p.is_file() and p.stat().st_size > 0]
    return pd.concat(parts, ignore_index=True) if parts else None


def trim_history(run_dir: Path, epoch: int) -> None:
    """Before a resume from a checkpoint of ``epoch``: keep the CSV rows up to that epoch in
    history.csv.  Lightning's CSVLogger starts a fresh metrics.csv; rows logged after the
    checkpoint (the epoch that was cut short) are dropped, so the final history equals an
    uninterrupted run's."""
    run_dir = Path(run_dir)
    current = run_dir / METRICS
    if not current.is_file():
        return
    df = logged(run_dir)
    if df is not None and "epoch" in df:
        df = df[df["epoch"].isna() | (df["epoch"] <= epoch)]
    if df is not None:
        atomic_write_text(run_dir / HISTORY, df.to_csv(index=False))
    current.unlink()


def finish_history(run_dir: Path) -> None:
    """Merge history.csv into metrics.csv once the run is over."""
    hist = Path(run_dir) / HISTORY
    if hist.is_file():
        atomic_write_text(Path(run_dir) / METRICS, logged(run_dir).to_csv(index=False))
        hist.unlink()


def last_logged(run_dir: Path) -> dict[str, float]:
    """The last logged value of every train/val metric in history.csv + metrics.csv."""
    df = logged(run_dir)
    if df is None:
        return {}
    return {col: float(df[col].dropna().iloc[-1]) for col in df.columns
            if col.startswith(("train/", "val/")) and df[col].notna().any()}


# ---- reuse of a twin run (same config under another table) -----------------------------------
def link_checkpoint(twin: Path, run_dir: Path) -> None:
    """Give a reused run its twin's ``last.ckpt`` so that it can be a parent (2f -> 2g).

    A hard link costs no disk; a copy is the fallback across file systems.
    """
    src, dst = last_checkpoint(twin), last_checkpoint(run_dir)
    if dst.exists() or not src.is_file():
        return
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def adopt_twin(twin: Path, run_dir: Path) -> None:
    """Make ``run_dir`` (config and row already written) a done copy of the done ``twin``:
    its summary (marked ``reused_from``), metrics and checkpoint."""
    summary = {**(read_summary(twin) or {}), "reused_from": str(twin)}
    atomic_write_json(Path(run_dir) / SUMMARY, summary)
    if (Path(twin) / METRICS).is_file():
        shutil.copyfile(Path(twin) / METRICS, Path(run_dir) / METRICS)
    link_checkpoint(twin, run_dir)
    atomic_write_text(Path(run_dir) / DONE, "")


def done_twins(results: Path, profile: str, run_id: str) -> list[Path]:
    """Done runs of ``run_id`` under any table of ``<results>/<profile>``, in path order."""
    return [p.parent for p in sorted(Path(results).glob(f"{profile}/*/{run_id}/{DONE}"))]


def done_runs(results: Path, profile: str) -> list[Path]:
    """Every done run folder with a summary and a row, ``<results>/<profile>/<table>/<id>``,
    in path order (what ``nlrepro collect`` gathers)."""
    out = []
    for path in sorted(Path(results, profile).glob(f"*/*/{SUMMARY}")):
        run_dir = path.parent
        if is_done(run_dir) and (run_dir / ROW).is_file():
            out.append(run_dir)
    return out


def write_test_videos(run_dir: Path, rows: dict[str, list]) -> None:
    """``test_videos.csv``: the multi-view test per video (all ranks' views gathered)."""
    import pandas as pd

    atomic_write_text(Path(run_dir) / TEST_VIDEOS,
                      pd.DataFrame(rows).to_csv(index=False, float_format="%.17g"))
