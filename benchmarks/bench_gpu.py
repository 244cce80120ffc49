"""Non-local block and NL C2D R50 training step on CUDA: fast kernels vs the N × M form.

Standalone: ``python benchmarks/bench_gpu.py [--quick | --full]``.  Without CUDA it prints
why, writes a one-line ``results/bench/gpu.md`` saying it was skipped, and exits 0.
With CUDA it writes ``results/bench/gpu.csv`` / ``gpu.md``:

* the CPU benchmark's block cases (``bench_nonlocal.cases``) in fp32, bf16 autocast,
  channels_last_3d and ``torch.compile`` (block only), forward and forward+backward,
  block vs ``benchmarks/reference_nonlocal.py``; peak memory = ``max_memory_allocated``
  above the inputs;
* a training step of NL C2D R50 5-block on 32×224², batch 8: clips/s and peak memory, fast
  vs ``fast=False``, fp32 / bf16 autocast / compiled;
* the longest clip (frames, a multiple of 8) whose batch-1 training step fits, fast vs not.

``--check`` (``make gpu-check``) is the few-minute check a lent GPU should run
(``benchmarks/gpu_check.py``; a labelled CPU fallback without CUDA).

``--smoke-cpu`` runs every code path on CPU with tiny shapes (to check the script itself;
its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402  (before torch)
import bench_nonlocal as cpu  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

NAME = "gpu"
SETTINGS = ("fp32", "bf16", "channels_last", "compile")


class Runner:
    """Device-specific timing and memory; the CPU smoke mode uses the same code paths."""

    def __init__(self, device: str, smoke: bool) -> None:
        self.device, self.smoke = torch.device(device), smoke
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
        """Median ms, variants interleaved, each call synchronised."""
        def synced(fn: Callable[[], object]) -> Callable[[], None]:
            return lambda: (fn(), self.sync())
        times = common.interleaved({k: synced(f) for k, f in fns.items()}, repeats, warmup=2)
        return {k: 1e3 * common.median(v) for k, v in times.items()}

    def peak_mib(self, fn: Callable[[], object]) -> float | None:
        """Peak allocated memory of one call above what was allocated before it."""
        if not self.cuda:
            return None
        self.sync()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    def autocast(self, setting: str) -> contextlib.AbstractContextManager:
        if "bf16" not in setting:  # "bf16", "compile_bf16"
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def compile(self, module: torch.nn.Module) -> torch.nn.Module:
        # aot_eager exercises the same graph capture on CPU without a C++ toolchain.
        return torch.compile(module, backend="aot_eager" if self.smoke else "inductor")


def prepare(module: torch.nn.Module, x: torch.Tensor, setting: str, runner: Runner
            ) -> tuple[torch.nn.Module, torch.Tensor]:
    module = module.to(runner.device)
    x = x.detach().to(runner.device)
    if setting == "channels_last":
        module = module.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if setting == "compile":
        module = runner.compile(module)
    return module, x.requires_grad_()


def block_rows(case: cpu.Case, setting: str, runner: Runner, repeats: int) -> list[dict]:
    names = ["block"] if setting == "compile" else ["block", "reference"]
    built = {v: prepare(*cpu.make(case, v), setting, runner) for v in names}

    def fwd(m, x):
        with torch.no_grad(), runner.autocast(setting):
            m(x)

    def fb(m, x):
        m.zero_grad(set_to_none=True)
        x.grad = None
        with runner.autocast(setting):
            out = m(x)
        out.float().sum().backward()
    t_f = runner.time({v: (lambda mx=mx: fwd(*mx)) for v, mx in built.items()}, repeats)
    t_fb = runner.time({v: (lambda mx=mx: fb(*mx)) for v, mx in built.items()}, repeats)
    rows = []
    for v, mx in built.items():
        mem = _guard_oom(lambda: runner.peak_mib(lambda: fb(*mx)))
        rows.append({**asdict(case), "case": case.label, "setting": setting, "variant": v,
                     "fwd_ms": t_f[v], "fwdbwd_ms": t_fb[v], "peak_mib": mem})
    return rows


def _recorded(fn: Callable[[], list[dict]], where: dict) -> list[dict]:
    """Run one benchmark; a failure becomes a row (and a line in the summary), not a crash."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - reported, and the other settings still run
        msg = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        print(f"  FAILED {where}: {msg}", file=sys.stderr)
        return [{**where, "variant": "error", "error": msg}]


def _guard_oom(fn: Callable[[], float | None]) -> float | None:
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return float("inf")


def training_step(frames: int, batch: int, fast: bool, setting: str, runner: Runner,
                  size: int, blocks: int = 5) -> Callable[[], None]:
    """One SGD step of NL C2D R50 5-block (embedded gaussian, subsample) on random clips
    (``blocks=0``: the C2D R50 baseline, the reference model of pricing.py)."""
    from nlrepro.config import ModelConfig, NonLocalConfig
    from nlrepro.models.resnet3d import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch="c2d", depth=50, num_classes=400,
                      width=8 if runner.smoke else 64,
                      nonlocal_=NonLocalConfig(blocks=blocks, fast=fast))
    model = build_model(cfg, frames=frames, crop=size, load_pretrained=False).train()
    model = model.to(runner.device)
    x = torch.randn(batch, 3, frames, size, size, device=runner.device)
    if setting == "channels_last":
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    net = runner.compile(model) if setting.startswith("compile") else model
    y = torch.randint(0, 400, (batch,), device=runner.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with runner.autocast(setting):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return step


def train_rows(runner: Runner, repeats: int, settings: tuple[str, ...]) -> list[dict]:
    frames, batch, size = (8, 2, 64) if runner.smoke else (32, 8, 224)
    rows = []
    case = f"train step NL C2D R50 5-block {frames}×{size}² B={batch}"

    def one(setting: str) -> list[dict]:
        steps = {v: training_step(frames, batch, fast, setting, runner, size)
                 for v, fast in (("block", True), ("reference", False))}
        times = runner.time(steps, repeats)
        return [{"case": case, "stage": "model", "setting": setting, "variant": v,
                 "fwdbwd_ms": times[v], "clips_per_s": batch / (times[v] / 1e3),
                 "peak_mib": _guard_oom(lambda: runner.peak_mib(step))}
                for v, step in steps.items()]
    for setting in settings:
        print(f"training step [{setting}]", flush=True)
        rows += _recorded(lambda: one(setting), {"case": case, "stage": "model",
                                                   "setting": setting})
    return rows


def fits(frames: int, fast: bool, runner: Runner, size: int, batch: int = 1) -> bool:
    """Whether one fp32 training step of ``batch`` clips fits in the device's memory."""
    try:
        step = training_step(frames, batch, fast, "fp32", runner, size)
        step()
        runner.sync()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        if runner.cuda:
            torch.cuda.empty_cache()


def longest_clip(fast: bool, runner: Runner, cap: int) -> int:
    """Largest multiple of 8 frames ≤ cap whose batch-1 step fits: doubling, then bisection."""
    size = 64 if runner.smoke else 224
    lo, hi = 0, 8
    while hi <= cap and fits(hi, fast, runner, size):
        lo, hi = hi, hi * 2
    hi = min(hi, cap + 8)
    while hi - lo > 8:
        mid = (lo + hi) // 16 * 8
        lo, hi = (mid, hi) if fits(mid, fast, runner, size) else (lo, mid)
    return lo


def summarise(df: pd.DataFrame, longest: dict[str, int], cap: int, mode: str,
              runner: Runner) -> list[str]:
    dev = torch.cuda.get_device_name() if runner.cuda else "CPU smoke run (numbers meaningless)"
    md = [f"# GPU benchmarks ({dev}; torch {torch.__version__}; mode {mode})", "",
          "Median ms after warm-up, block and reference interleaved; MiB = "
          "`torch.cuda.max_memory_allocated` above the inputs (inf = out of memory).", ""]
    errors = df[df.variant == "error"] if "error" in df else df.iloc[:0]
    df = df[df.variant != "error"]
    ops = df[df.stage != "model"]
    if len(ops):
        wide = ops.pivot_table(index=["case", "setting"], columns="variant",
                               values=["fwd_ms", "fwdbwd_ms", "peak_mib"], sort=False)
        wide.columns = [f"{v} {m.replace('fwdbwd', 'f+b').replace('peak_mib', 'MiB')}"
                        for m, v in wide.columns]
        if "reference f+b_ms" in wide:
            wide["f+b ratio"] = wide["block f+b_ms"] / wide["reference f+b_ms"]
        md += ["## Block (ratio = block / reference)", "",
               wide.reset_index().round(2).to_markdown(index=False), ""]
    tr = df[df.stage == "model"]
    if len(tr):
        md += ["## Training step", "",
               tr[["case", "setting", "variant", "clips_per_s", "fwdbwd_ms", "peak_mib"]]
               .round(2).to_markdown(index=False), ""]
    for _, r in errors.iterrows():
        md.append(f"- **failed**: {r.case} [{r.setting}]: `{r.error}`")
    for v, n in longest.items():
        md.append(f"- longest batch-1 clip that trains ({v}): {n} frames (searched up to {cap})")
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode")
    g.add_argument("--full", action="store_const", const="full", dest="mode")
    g.add_argument("--check", action="store_const", const="check", dest="mode",
                   help="the few-minute GPU check (benchmarks/gpu_check.py; make gpu-check)")
    p.add_argument("--out", type=Path, default=common.RESULTS, help="--check: output folder")
    p.add_argument("--smoke-cpu", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--max-frames", type=int, default=1024)
    args = p.parse_args(argv)
    mode = args.mode or os.environ.get("NLREPRO_BENCH_MODE", "default")
    if mode == "check":
        import gpu_check

        return gpu_check.main(args.out)
    if not torch.cuda.is_available() and not args.smoke_cpu:
        msg = "no CUDA device (torch.cuda.is_available() is False)"
        print(f"bench_gpu: skipped, {msg}")
        common.write_results(NAME, pd.DataFrame([{"skipped": msg}]),
                             ["# GPU benchmarks", "",
                              f"**Skipped**: {msg}; machine: {common.machine()}.  "
                              "`python benchmarks/bench_gpu.py` on a CUDA machine runs them."])
        return 0
    runner = Runner("cpu" if args.smoke_cpu else "cuda", args.smoke_cpu)
    if runner.cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    cases = cpu.cases("quick" if mode == "quick" or args.smoke_cpu else mode)
    if args.smoke_cpu:
        cpu.STAGES.update(res4=(16, 6))  # tiny channels and maps
        cases = cases[::3]
    settings = SETTINGS if mode != "quick" else ("fp32", "bf16")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for case in cases:
        for setting in settings:
            print(f"{case.label} [{setting}]", flush=True)
            rows += _recorded(lambda: block_rows(case, setting, runner, args.repeats),
                              {**asdict(case), "case": case.label, "setting": setting})
    rows += train_rows(runner, args.repeats, settings)
    cap = 32 if args.smoke_cpu else args.max_frames
    longest = {} if mode == "quick" else {
        v: longest_clip(fast, runner, cap) for v, fast in (("fast", True), ("fast=False", False))}
    df = pd.DataFrame(rows)
    md = summarise(df, longest, cap, mode, runner)
    md.append(f"\nTotal {time.perf_counter() - t0:.0f} s.")
    common.write_results(NAME + "_smoke" if args.smoke_cpu else NAME, df, md)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
