"""Timing, peak-memory and output helpers shared by every ``benchmarks/bench_*.py`` script.

Timings: median of ≥ 5 runs after a warm-up, the variants of one case interleaved (A B A B …)
so that load from other processes hits them alike; report ratios measured in the same run.
Memory: peak RSS of a fresh subprocess per case, as the rise above the baseline taken after
setup (the script warms up first; ``/proc/self/clear_refs`` resets the high-water mark).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# On a shared machine OpenMP's default spin-waiting makes 2-thread torch ops wait for a
# descheduled partner thread: measured here under load ~5, a res3 block forward+backward took
# 756 ms with the default policy, 216 ms with PASSIVE (a 4×8² toy: 416 ms vs 20 ms).  Read by
# libgomp when torch is first imported, so every script imports this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "bench"
THREADS = 2  # the machine the numbers are for: 2 cores
MODES = ("quick", "default", "full")  # NLREPRO_BENCH_MODE; run_all.py --quick / --full


def bench_mode(given: str | None = None) -> str:
    """The benchmark mode: ``given`` (a script's own flag) or ``NLREPRO_BENCH_MODE``."""
    mode = given or os.environ.get("NLREPRO_BENCH_MODE") or "default"
    if mode not in MODES:
        raise SystemExit(f"NLREPRO_BENCH_MODE={mode!r} is not valid; choose one of "
                         f"{', '.join(MODES)}")
    return mode


def set_threads(threads: int = THREADS) -> None:
    """Fixed torch thread count, so every number means the same split of the work."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant: warm-up calls, then A B C A B C … ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# ---- memory --------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")  # pragma: no cover


def peak_rss_rise(fn: Callable[[], object]) -> int:
    """Bytes by which one call of ``fn`` raises the peak RSS above the current RSS.

    Call it in a fresh process after setup and a warm-up call; the kernel's high-water mark
    is reset first (``clear_refs`` 5), so setup peaks do not hide the call's own peak.
    """
    gc.collect()
    base = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return max(0, _hwm_bytes() - base)


def measure_in_subprocess(script: Path, spec: dict, timeout: float = 1800):
    """Run ``script --memory JSON`` in a fresh interpreter; its last stdout line is JSON:
    bytes (an int), or ``{variant: bytes}`` when the child measures several variants of
    one case one after the other (each with its own warm-up and high-water-mark reset).

    None when the child fails (e.g. out of memory); the reason goes to stderr.
    """
    cmd = [sys.executable, str(script), "--memory", json.dumps(spec)]
    # A fixed mmap threshold: every large tensor gets its own mapping and goes back to the
    # OS when freed, so the warm-up's freed heap cannot absorb the measured run.
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MALLOC_MMAP_THRESHOLD_": "131072"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"  memory child timed out after {timeout:.0f} s: {spec}", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"  memory child failed ({proc.returncode}) for {spec}: "
              f"{proc.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(nbytes: int | None) -> float:
    return float("nan") if nbytes is None else nbytes / 2**20


# ---- output --------------------------------------------------------------------------------
def load() -> str:
    """1/5/15-minute load averages: other processes on the machine skew absolute timings."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def write_results(name: str, frame, markdown: str | list[str]) -> Path:
    """``results/bench/<name>.csv`` (every number) and ``<name>.md``; returns the .md path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS / f"{name}.csv", index=False)
    text = markdown if isinstance(markdown, str) else "\n".join(markdown)
    md = RESULTS / f"{name}.md"
    md.write_text(text.rstrip() + "\n")
    return md
