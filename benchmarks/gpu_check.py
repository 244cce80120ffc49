"""``make gpu-check`` (``bench_gpu.py --check``): what a lent GPU should prove, in minutes.

1. a training step of NL C2D R50 (5 blocks, 32×224², batch 8) in fp32 and bf16, each with
   and without ``torch.compile``: clips/s and peak memory;
2. the largest 32×224² batch and the longest batch-1 clip whose training step fits, for the
   fast NL block and the materialising N×M reference (``fast=False``);
3. a 1-GPU DDP run of ``nlrepro train`` (``trainer.strategy=ddp``) on tiny proxy data;
4. the throughput ``nlrepro/pricing.py`` prices with: C2D R50, 32×224², batch 8,
   channels_last, bf16 (the kinetics profile), written as an ``experiments/throughput.yaml``
   entry to ``gpu_check_throughput.yaml`` (synthetic clips: no decoding, an upper bound).

Without CUDA it runs the same steps on CPU at tiny sizes and writes
``gpu_check_cpu_fallback.{csv,md}`` only, headed as CPU numbers: never ``gpu_check.*`` and
never a throughput entry that pricing could mistake for a GPU's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

import bench_gpu

SETTINGS = ("fp32", "compile", "bf16", "compile_bf16")
GPU = {"frames": 32, "size": 224, "batch": 8, "max_batch": 256, "max_frames": 1024}
CPU = {"frames": 8, "size": 64, "batch": 2, "max_batch": 4, "max_frames": 16}


def _timed(step, runner: bench_gpu.Runner, repeats: int) -> float:
    """Median seconds of ``step`` after two warm-up calls (compilation included there)."""
    return runner.time({"step": step}, repeats)["step"] / 1e3


def train_steps(runner: bench_gpu.Runner, shape: dict, repeats: int) -> list[dict]:
    rows = []
    for setting in SETTINGS:
        def one() -> list[dict]:
            step = bench_gpu.training_step(shape["frames"], shape["batch"], True, setting,
                                           runner, shape["size"])
            sec = _timed(step, runner, repeats)
            return [{"check": "train step NL C2D R50 5-block", "setting": setting,
                     "clips_per_s": shape["batch"] / sec, "step_ms": 1e3 * sec,
                     "peak_mib": bench_gpu._guard_oom(lambda: runner.peak_mib(step))}]
        print(f"gpu-check: training step [{setting}]", flush=True)
        rows += bench_gpu._recorded(one, {"check": "train step", "setting": setting})
    return rows


def _fits_batch(batch: int, fast: bool, runner: bench_gpu.Runner, shape: dict) -> bool:
    return bench_gpu.fits(shape["frames"], fast, runner, shape["size"], batch)


def largest_batch(fast: bool, runner: bench_gpu.Runner, shape: dict) -> int:
    """Largest batch ≤ max_batch whose fp32 step fits: doubling, then bisection."""
    lo, hi = 0, 1
    while hi <= shape["max_batch"] and _fits_batch(hi, fast, runner, shape):
        lo, hi = hi, hi * 2
    hi = min(hi, shape["max_batch"] + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits_batch(mid, fast, runner, shape) else (lo, mid)
    return lo


def ddp_run(accelerator: str, folder: Path) -> dict:
    """``nlrepro train`` with one device under the DDP strategy; the summary's key facts."""
    sets = ["data.proxy.num_train=32", "data.proxy.num_val=8", "data.proxy.num_test=8",
            "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
            "data.batch_size=8", "trainer.max_epochs=1", "trainer.threads=1",
            f"data.root={folder / 'proxy'}", f"trainer.accelerator={accelerator}",
            "trainer.devices=1", "trainer.strategy=ddp", "model.nonlocal.blocks=1"]
    cmd = [sys.executable, "-m", "nlrepro", "train", "--profile", "proxy", "--run-dir",
           str(folder / "run"), *[a for s in sets for a in ("--set", s)]]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        return {"check": "1-device DDP run", "ok": False, "error": res.stderr[-300:]}
    summary = json.loads((folder / "run" / "summary.json").read_text())
    return {"check": "1-device DDP run", "ok": True, "world_size": summary["world_size"],
            "steps": summary["steps"], "test_videos": summary["metrics"]["test/videos"],
            "seconds": time.time() - t0}


def pricing_throughput(runner: bench_gpu.Runner, shape: dict, repeats: int) -> float:
    """clips/s of the pricing reference: C2D R50 (no NL), channels_last, bf16, batch 8."""
    step = bench_gpu.training_step(shape["frames"], shape["batch"], True, "channels_last",
                                   runner, shape["size"], blocks=0)
    with runner.autocast("bf16"):
        return shape["batch"] / _timed(step, runner, repeats)


def main(out: Path, repeats: int = 0) -> int:
    cuda = torch.cuda.is_available()
    repeats = repeats or (5 if cuda else 2)
    runner = bench_gpu.Runner("cuda" if cuda else "cpu", smoke=not cuda)
    shape = GPU if cuda else CPU
    device = torch.cuda.get_device_name() if cuda else "CPU FALLBACK (no CUDA device)"
    t0 = time.perf_counter()
    rows = train_steps(runner, shape, repeats)
    print("gpu-check: largest batch / longest clip", flush=True)
    for variant, fast in (("fast", True), ("reference", False)):
        rows.append({"check": f"largest {shape['frames']}x{shape['size']}^2 batch",
                     "variant": variant, "value": largest_batch(fast, runner, shape)})
        rows.append({"check": "longest batch-1 clip (frames)", "variant": variant,
                     "value": bench_gpu.longest_clip(fast, runner, shape["max_frames"])})
    print("gpu-check: 1-device DDP run", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(ddp_run("gpu" if cuda else "cpu", Path(tmp)))
    rate = pricing_throughput(runner, shape, repeats)
    rows.append({"check": "pricing reference C2D R50 bf16 channels_last", "clips_per_s": rate})
    df = pd.DataFrame(rows)
    head = (f"# GPU check on {device}" if cuda else
            "# GPU check: CPU FALLBACK, NOT GPU NUMBERS\n\nNo CUDA device: the same steps "
            f"ran on CPU at tiny sizes ({shape}) to test the script. Nothing here is a GPU "
            "measurement; no throughput entry was written.")
    md = [head, "", f"torch {torch.__version__}; {time.perf_counter() - t0:.0f} s.", "",
          df.round(3).to_markdown(index=False)]
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check" if cuda else "gpu_check_cpu_fallback"
    df.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    if cuda:
        entry = {device: {"clips_per_s": round(rate, 1), "precision": "bf16-mixed",
                          "source": "measured",
                          "reasoning": "bench_gpu.py --check: synthetic 32x224^2 clips, batch "
                                       "8, 1 GPU, no video decoding (an upper bound)"}}
        (out / "gpu_check_throughput.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    print("\n".join(md))
    ddp_ok = all(r.get("ok", True) for r in rows)
    errors = [r for r in rows if r.get("variant") == "error"]
    return 0 if ddp_ok and not errors else 1
