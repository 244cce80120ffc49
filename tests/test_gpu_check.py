"""``make gpu-check`` without a GPU: the CPU fallback runs every step and is labelled so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check is the GPU run")
def test_gpu_check_falls_back_to_cpu_and_says_so(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--check",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    # Only the fallback's files: nothing named like a GPU result, no throughput entry.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check_cpu_fallback.csv",
                                                          "gpu_check_cpu_fallback.md"]
    md = (tmp_path / "gpu_check_cpu_fallback.md").read_text()
    assert md.startswith("# GPU check: CPU FALLBACK, NOT GPU NUMBERS")
    df = pd.read_csv(tmp_path / "gpu_check_cpu_fallback.csv")
    steps = df[df["check"] == "train step NL C2D R50 5-block"]
    assert sorted(steps["setting"]) == ["bf16", "compile", "compile_bf16", "fp32"]
    assert (steps["clips_per_s"] > 0).all()
    sizes = df[df["check"].str.startswith(("largest", "longest"))]
    assert len(sizes) == 4 and (sizes["value"] >= 1).all()
    ddp = df[df["check"] == "1-device DDP run"].iloc[0]
    assert ddp["ok"] and ddp["world_size"] == 1 and ddp["steps"] > 0
    assert (df["check"] == "pricing reference C2D R50 bf16 channels_last").sum() == 1
