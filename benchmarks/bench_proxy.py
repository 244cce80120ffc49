"""Wall time of a proxy run (train + multi-view test) with the real profile, C2D vs NL.

Each run is a fresh ``nlrepro train --profile proxy`` subprocess (what ``make table2a`` runs
15 times), timed end to end; its ``summary.json`` gives the fit time (training + validation)
and the training throughput, its log the time of every epoch (the first one also decodes every
video once into the cache).  The dataset and the frame pre-training are done once beforehand,
timed apart (a table does each once).

Modes (``NLREPRO_BENCH_MODE`` / ``run_all.py --quick`` / ``--full``):

* ``default`` (``make bench``): the profile as it is, one C2D and one NL run (≈ 3 minutes);
* ``full``: the same, then the whole of Table 2a as ``make table2a`` runs it (its sweep, 15
  runs two at a time, into a temporary folder: ≈ 10 minutes);
* ``quick``: ``trainer.max_epochs=1`` on 64/16/16 videos (a smoke run; accuracies mean nothing).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bench_mode, load, write_results  # noqa: E402  (sets OMP_WAIT_POLICY)

import pandas as pd  # noqa: E402

ROWS = {"C2D baseline": ["model.nonlocal.blocks=0"],
        "NL C2D, 1 block (embedded gaussian)": ["model.nonlocal.blocks=1"]}
# (train, val, test) videos and the --set items that cap a run, per mode; None = the profile's.
DATA = {"quick": (64, 16, 16), "default": None, "full": None}
CAP = {"quick": ["trainer.max_epochs=1"], "default": [], "full": []}
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ done in ([\d.]+)s")


def run_once(sets: list[str], out: Path, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "nlrepro", "train", "--profile", "proxy", "--run-dir", str(out)]
    for s in sets:
        cmd += ["--set", s]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"bench_proxy: {' '.join(cmd)} failed ({proc.returncode}):\n"
              f"{proc.stderr[-3000:]}", file=sys.stderr)
        raise SystemExit(1)
    summary = json.loads((out / "summary.json").read_text())
    epochs = [float(s) for _, s in EPOCH_LINE.findall(proc.stderr + proc.stdout)]
    return {"wall_s": wall, "fit_s": summary["train_seconds"],
            "epoch1_s": epochs[0] if epochs else None,
            "later_epoch_s": statistics.median(epochs[1:]) if len(epochs) > 1 else None,
            "startup_test_s": wall - summary["train_seconds"], "epochs": summary["epochs"],
            "steps": summary["steps"], "train_clips_per_s": summary["throughput_clips_per_s"],
            "test_top1_video": summary["metrics"].get("test/top1_video")}


def run_table(tmp: Path, data: Path) -> dict:
    """``make table2a``'s sweep into a temporary results folder, timed end to end."""
    cmd = [sys.executable, "-m", "nlrepro", "sweep", str(ROOT / "experiments" / "table2a.yaml"),
           "--profile", "proxy", "--launcher", "local", "--results", str(tmp / "results"),
           "--set", f"data.root={data}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"bench_proxy: table sweep failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        raise SystemExit(1)
    return {"case": "Table 2a sweep (15 runs, 2 side by side; data and pre-training done)",
            "wall_s": wall}


def main() -> int:
    from nlrepro.config import load_config
    from nlrepro.proxy.dataset import make_proxy_data
    from nlrepro.proxy.pretrain import ensure_frame_pretrained, uses_frames

    mode = bench_mode()
    sizes = DATA[mode]
    data_sets = ([] if sizes is None else
                 [f"data.proxy.num_{k}={n}" for k, n in zip(("train", "val", "test"), sizes)])
    full_cfg = load_config("proxy")
    cfg = load_config("proxy", sets=data_sets)
    p = cfg.data.proxy
    videos = p.num_train + p.num_val + p.num_test
    full_videos = full_cfg.data.proxy.num_train + full_cfg.data.proxy.num_val \
        + full_cfg.data.proxy.num_test
    full_clips = full_cfg.data.proxy.num_train * full_cfg.trainer.max_epochs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        make_proxy_data(data, p, progress=False)
        gen = time.perf_counter() - start
        rows.append({"case": f"proxy data generation ({videos} videos, once per table)",
                     "wall_s": gen})
        pre_cfg = load_config("proxy", sets=[*data_sets, f"data.root={data}"])
        if uses_frames(pre_cfg):
            start = time.perf_counter()
            ensure_frame_pretrained(pre_cfg)
            rows.append({"case": f"frame pre-training ({p.pretrain_images} frames × "
                                 f"{p.pretrain_epochs} epochs, once per table)",
                         "wall_s": time.perf_counter() - start})
        for i, (name, sets) in enumerate(ROWS.items()):
            print(f"proxy run: {name}", flush=True)
            rows.append({"case": name, **run_once(sets + data_sets + CAP[mode]
                                                   + [f"data.root={data}"], Path(tmp) / str(i))})
        if sizes is not None:  # what a plain `nlrepro train` gets on a shared machine
            name = f"{next(iter(ROWS))}, OMP_WAIT_POLICY unset (libgomp default)"
            print(f"proxy run: {name}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            rows.append({"case": name, **run_once(next(iter(ROWS.values())) + data_sets
                                                   + CAP[mode] + [f"data.root={data}"],
                                                   Path(tmp) / "omp", env)})
        if mode == "full":
            print("proxy: the whole Table 2a sweep", flush=True)
            rows.append(run_table(Path(tmp), data))
    df = pd.DataFrame(rows)
    runs = df[df.steps.notna()]
    if sizes is None:
        scope = (f"the proxy profile as it is ({full_videos} videos, "
                 f"{full_cfg.trainer.max_epochs} epochs)")
    else:
        scope = (f"**capped runs**: `--set {' --set '.join(CAP[mode])}` on a reduced proxy "
                 f"dataset of {sizes[0]}/{sizes[1]}/{sizes[2]} train/val/test videos "
                 f"(`data.proxy.num_*`; the profile has {full_cfg.data.proxy.num_train}/"
                 f"{full_cfg.data.proxy.num_val}/{full_cfg.data.proxy.num_test} and "
                 f"{full_cfg.trainer.max_epochs} epochs), so accuracies mean nothing; "
                 "`run_all.py --full` runs the profile unchanged")
    md = [f"# Proxy training runs (mode {mode})", "",
          f"One `nlrepro train --profile proxy` subprocess per row, timed end to end: {scope}.  "
          "fit_s = training + validation (Lightning fit); epoch1_s also decodes every train "
          "and val video once into the cache; startup_test_s = wall − fit (imports, model, "
          "test); train_clips_per_s = training clips / fit_s; the profile's threads "
          f"({full_cfg.trainer.threads}), OMP_WAIT_POLICY=PASSIVE (set by the benchmarks).",
          "", df.to_markdown(index=False, floatfmt=".1f"), ""]
    if sizes is not None:
        est = {r.case: full_clips / r.train_clips_per_s / 60 for r in runs.itertuples()}
        md.append(f"Rough extrapolation to the full profile ({full_cfg.data.proxy.num_train} "
                  f"clips × {full_cfg.trainer.max_epochs} epochs at the capped runs' "
                  "throughput, which includes the first-epoch decoding and validation): "
                  + "; ".join(f"{k} ≈ {v:.0f} min" for k, v in est.items())
                  + f"; data generation ≈ {gen / videos * full_videos:.0f} s for "
                  f"{full_videos} videos.")
    if sizes is not None:
        plain = runs[runs.case.str.contains("OMP_WAIT_POLICY unset")]
        if len(plain):
            c2d = runs.iloc[0]
            md.append(f"The last row is the C2D run again without `OMP_WAIT_POLICY=PASSIVE`, "
                      f"as `make table2a` runs it: {plain.train_clips_per_s.iloc[0]:.1f} vs "
                      f"{c2d.train_clips_per_s:.1f} training clips/s with PASSIVE "
                      f"(PASSIVE / unset = {c2d.train_clips_per_s / plain.train_clips_per_s.iloc[0]:.2f}×;"
                      " OpenMP's default spin-waiting costs most when other jobs load the "
                      "cores, so this moves with the load average below).")
    md.append(f"Load average at the end: {load()}.  A table of 5 rows × 3 seeds runs 15 such "
              "runs.")
    print(write_results("proxy", df, md).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
