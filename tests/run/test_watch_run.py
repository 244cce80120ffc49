"""A real tiny run watched as on SLURM: stderr is no terminal, so plain progress lines cover
precise BN and the test; TensorBoard events land under the run's readable name."""

import json
import os
import subprocess
import sys

import pytest

from nlrepro.config import load_config
from nlrepro.run.identity import config_hash
from nlrepro.run.tracking import run_name

TINY = ["data.proxy.num_train=48", "data.proxy.num_val=16", "data.proxy.num_test=16",
        "data.proxy.pretrain_images=32", "data.proxy.pretrain_epochs=1",
        "data.batch_size=8", "trainer.log_every_n_steps=1", "trainer.deterministic=true",
        "data.num_workers=0", "trainer.threads=1", "trainer.max_epochs=1",
        "model.nonlocal.blocks=1", "trainer.precise_bn_batches=1",
        "trainer.loggers=[csv, tensorboard]"]


@pytest.mark.slow
def test_plain_progress_covers_precise_bn_and_test_and_tensorboard_has_the_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "results" / "proxy" / "adhoc"
    sets = [*TINY, f"data.root={tmp_path / 'proxy'}", f"output_dir={output}"]
    env = {**os.environ, "NLREPRO_PROGRESS_EVERY_S": "0"}
    res = subprocess.run([sys.executable, "-m", "nlrepro", "train", "--profile", "proxy",
                          "--set", *sets], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stderr
    for line in ("precise BN: 1 batches", "precise BN batch 1/1", "precise BN done: 1 batches",
                 "test: 2 batches", "test batch 1/2", "test batch 2/2",
                 "test done: 2 batches"):
        assert line in log, line
    assert log.index("precise BN done") < log.index("test: 2 batches") < log.index("test done")

    cfg = load_config("proxy", sets=sets)
    run = output / config_hash(cfg)
    name = run_name(cfg)
    assert name == "adhoc/c2d-NL1-embedded_gaussian/R50/s0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["name"] == name and summary["run_id"] == run.name
    assert (run / "metrics.csv").is_file()  # the CSV log stays where the tables read it
    tb = tmp_path / "results" / "proxy" / "tb" / name / run.name
    events = EventAccumulator(str(tb))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/top1_clip", "train/loss"} <= tags, tags
