"""Wall time of a proxy run (train + multi-view test) with the real profile, C2D vs NL.

Each run is a fresh ``nlrepro train --profile proxy`` subprocess (what ``make table2a`` runs
15 times), timed end to end; its ``summary.json`` gives the fit time (training + validation)
and the training throughput.  The dataset is generated once into a temporary folder, timed
apart (a table generates it once).

Modes (``NLREPRO_BENCH_MODE`` / ``run_all.py --quick`` / ``--full``):

* ``full``: the profile as it is (4000/500/500 videos, 8 epochs): tens of minutes a run here;
* ``default`` (``make bench``): capped runs, ``trainer.max_epochs=1`` on a 256/64/64-video
  proxy dataset (32 steps of batch 8); the full-profile time is extrapolated from the
  throughput and said to be an estimate;
* ``quick``: ``trainer.max_epochs=1`` on 64/16/16 videos (a smoke run).
"""

from __future__ import annotations

import json
import os
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
DATA = {"quick": (64, 16, 16), "default": (256, 64, 64), "full": None}
CAP = {"quick": ["trainer.max_epochs=1"], "default": ["trainer.max_epochs=1"], "full": []}


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
    return {"wall_s": wall, "fit_s": summary["train_seconds"], "epochs": summary["epochs"],
            "steps": summary["steps"], "train_clips_per_s": summary["throughput_clips_per_s"],
            "test_top1_video": summary["metrics"].get("test/top1_video")}


def main() -> int:
    from nlrepro.config import load_config
    from nlrepro.data.proxy import make_proxy_data

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
    df = pd.DataFrame(rows)
    runs = df.iloc[1:]
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
          "fit_s = training + validation (Lightning fit); train_clips_per_s = training clips / "
          f"fit_s; 2 threads (the profile's), OMP_WAIT_POLICY=PASSIVE (set by the benchmarks).",
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
