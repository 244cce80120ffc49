"""``nlrepro attention``: the figure through the real CLI on a real H.264 clip decoded by
decord, argument errors, and ``auto`` on a done Table 2c run folder."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.figure3 import SMALL_PROXY, make_model, save_checkpoint, attention_cli, auto_spec
from nlrepro.cli import main as cli
from nlrepro.figure3 import capture as cap
from nlrepro.figure3 import command as cmd
from nlrepro.figure3 import measure as msr
from nlrepro.proxy import truth as ptruth


def test_figure_png_is_deterministic_and_pdf_works(run, capsys):
    a, b, pdf = (run["folder"] / name for name in ("a.png", "b.png", "c.pdf"))
    assert attention_cli(run, "--out", str(a), "--top", "5", "--num-queries", "2") == 0
    report = json.loads(capsys.readouterr().out)
    assert attention_cli(run, "--out", str(b), "--top", "5", "--num-queries", "2") == 0
    capsys.readouterr()
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.stat().st_size > 10_000
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.with_suffix(".json").read_text()) == report  # saved next to it
    assert attention_cli(run, "--out", str(pdf), "--query", "3,0,1") == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert json.loads(capsys.readouterr().out)["queries"][0]["t,y,x"] == [3, 0, 1]
    block = next(iter(cap.nonlocal_blocks(make_model())))  # the profile's 1-block position
    assert report["block"] == block and len(report["queries"]) == 2
    assert "probe_to_cue" not in report  # not a proxy video: no ground truth to measure
    top = list(report["queries"][0]["top5 (key t,y,x: weight)"].values())
    # --top 5, but the res4 block has only 4 keys (4 time steps × one pooled 1×1 cell).
    assert len(top) == 4 and top == sorted(top, reverse=True)
    # The default output goes into the run folder.
    assert attention_cli(run) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(
        run["run"] / f"figure3_{block}_clip.png")
    assert (run["run"] / f"figure3_{block}_clip.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--block", "res2.0"], r"valid: res4\.\d, or 'strongest'"),
    (["--block", "strongest"], r"--block strongest: needs a proxy run"),
    (["--query", "9,0,0"], r"--query '9,0,0': t=9 is outside 0\.\.3"),
    (["--query", "a,b"], r"three integers"),
    (["--out", "x.jpg"], r"\.png or \.pdf"),
    (["--top", "0"], r"must be >= 1"),
    (["--ratio-videos", "-1"], r"must be >= 0"),
])
def test_bad_arguments_fail_with_a_clear_message(run, capsys, extra, message):
    assert attention_cli(run, *extra) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_bad_checkpoint_and_video(run, tmp_path, capsys):
    assert cli(["attention", str(tmp_path / "nothing.ckpt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert attention_cli(run, "--video", str(tmp_path / "missing.mp4")) == 2
    assert "no such file" in capsys.readouterr().err


def test_auto_reuses_a_done_twin_run_and_measures_the_proxy_clip(proxy_root, tmp_path, capsys,
                                                                  caplog):
    """``make figure3``'s path without training: the Table 2c run is done under another table
    (same config hash), so 'auto' adopts it, draws test video 0 of the proxy data with the
    query on a probe, and writes the cue mass ratio next to the figure."""
    from nlrepro.sweep import write_spec
    from nlrepro.utils import atomic_write_json

    results, out = tmp_path / "results", tmp_path / "fig" / "figure3.png"
    sets = [f"data.root={proxy_root}", *SMALL_PROXY]
    spec = auto_spec(results, sets)
    twin = results / "proxy" / "2x" / spec.run_id
    model = make_model(blocks=5, sets=tuple(sets))
    assert model.cfg.model.nonlocal_.blocks == 5
    spec_twin = type(spec)(**{**spec.__dict__, "run_dir": twin})
    write_spec(spec_twin)
    save_checkpoint(model, twin / "checkpoints" / "last.ckpt")
    atomic_write_json(twin / "summary.json", {"metrics": {"test/top1_video": 99.0}})
    (twin / "done").write_text("")

    args = ["attention", "auto", "--profile", "proxy", "--results", str(results),
            *(a for s in sets for a in ("--set", s)), "--out", str(out), "--ratio-videos", "3"]
    with caplog.at_level("INFO", logger="nlrepro.attention"):
        assert cli(args) == 0
    report = json.loads(capsys.readouterr().out)
    # The headline is logged for every proxy clip, whichever block is drawn.
    assert "cross-time affinity (1 = uniform): probe->cue frames" in caplog.text
    assert report["checkpoint"] == str(twin / "checkpoints" / "last.ckpt")
    # Adopted, not trained: the run's checkpoint is the twin's file, linked.
    assert (spec.run_dir / "done").is_file()
    assert (spec.run_dir / "checkpoints" / "last.ckpt").samefile(twin / "checkpoints" / "last.ckpt")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.with_suffix(".json").read_text()) == report
    assert report["video"] == str(ptruth.proxy_test_videos(report["video"])[0])
    # The drawn query comes from the direction the block uses more: probe -> cue or back.
    cross = report["cross_time"]
    assert cross["ratio"] == max(cross["ratios"].values())
    assert report["queries"][0]["on_probe" if cross["direction"] == "probe_to_cue"
                               else "on_cue"] is True
    back = report["cue_to_probe"]["test_videos"]["probe_frames"]
    assert cross["ratios"]["cue_to_probe"] == back["ratio"] > 0
    clip = report["probe_to_cue"]["clip"]
    assert 0 < clip["cue_frames"]["uniform"] < 1 and clip["cue_frames"]["queries"] >= 1
    mean = report["probe_to_cue"]["test_videos"]
    assert mean["cue_frames"]["clips"] <= 3
    assert report["cue_mass_ratio"] == mean["cue_frames"]["ratio"] > 0
    # The measured clip, recomputed through the library: same numbers.
    loaded = cap.load_classifier(report["checkpoint"])
    shown = cap.load_clip(loaded.cfg, report["video"])
    again = msr.proxy_cue_ratio(cap.capture(loaded, shown.tensor), shown)
    assert again["cue_frames"]["ratio"] == pytest.approx(clip["cue_frames"]["ratio"], abs=1e-4)
    # --video example: the clip example_video picks for the dominant direction; the same
    # test-video numbers.
    assert cli([*args, "--video", "example"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    tests = ptruth.proxy_test_videos(report["video"])
    typical = msr.typical_mass(msr.mean_ratios(loaded, loaded.cfg, tests, None), cross["direction"])
    assert typical == pytest.approx(
        report[cross["direction"]]["test_videos"][msr.FRAMES[cross["direction"]]]["mass"],
        abs=1e-4)
    assert chosen["video"] == str(msr.example_video(loaded, loaded.cfg, tests, None,
                                                  cross["direction"], typical))
    assert chosen["cross_time"] == cross
    # --block strongest: every block measured on the test clips, the largest ratio drawn.
    assert cli([*args, "--block", "strongest"]) == 0
    strong = json.loads(capsys.readouterr().out)
    per_block = msr.block_ratios(loaded, loaded.cfg, tests)
    # One forward pass per clip for all blocks measures what one pass per block does.
    assert per_block == {b: msr.mean_ratios(loaded, loaded.cfg, tests, b) for b in per_block}
    name, direction, ratio = msr.strongest_block(per_block)
    assert list(strong["blocks"]) == list(cap.nonlocal_blocks(loaded)) and len(per_block) == 5
    assert strong["block"] == name and strong["cross_time"]["direction"] == direction
    assert strong["cross_time"]["ratio"] == pytest.approx(ratio)
    assert ratio == max(r for b in strong["blocks"].values() for r in b.values())


def test_auto_does_not_train_outside_the_proxy(tmp_path, capsys):
    assert cli(["attention", "auto", "--profile", "kinetics", "--results", str(tmp_path)]) == 2
    assert "'auto' trains only on a proxy profile" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_trained_proxy_block_looks_across_time(tmp_path, capsys):
    """``make figure3``'s model, really trained: the Table 2c 5-block R50 seed-0 proxy run
    passes the additive limit (75%), and on its test clips the block that relates the two
    events most (``--block strongest``) puts far more of one event's queries' affinity on the
    other event's frames than uniform, where the same network before training does not.
    Reuses the run under results/ when ``make table2c`` or ``make figure3`` made it;
    otherwise trains it here from nothing (videos, frame pre-training, 4 epochs: ≈ 3 minutes
    on 2 cores), as on a fresh machine."""
    from nlrepro.config import read_config
    from nlrepro.run.rundir import read_summary

    spec = auto_spec(cmd.ROOT / "results", [])  # the run id of today's profile
    done = sorted((cmd.ROOT / "results" / "proxy").glob(f"*/{spec.run_id}/done"))
    runs = [d.parent for d in done if (d.parent / "checkpoints" / "last.ckpt").is_file()
            and (cmd.ROOT / read_config(d.parent / "config.yaml").data.root / "test.csv").is_file()]
    if runs:
        run = runs[0]
    else:
        results = tmp_path / "results"
        sets = ["--set", f"data.root={tmp_path / 'data' / 'proxy'}"]
        assert cli(["attention", "auto", "--profile", "proxy", "--results", str(results),
                    *sets, "--out", str(tmp_path / "trained.png"), "--ratio-videos", "1"]) == 0
        capsys.readouterr()
        run = next(results.glob("proxy/*/*/done")).parent
    accuracy = (read_summary(run) or {}).get("metrics", {}).get("test/top1_video")
    assert accuracy is not None and accuracy > 75, (
        f"{run}: test top-1 {accuracy}% is not above the additive limit (75%)")
    model = cap.load_classifier(run)
    root = (cmd.ROOT / model.cfg.data.root).resolve()
    assert (root / "test.csv").is_file(), f"the run's proxy data {root} is not there"
    video = ptruth.proxy_test_videos(root / "test" / "x" / "y.mp4")[0]
    out = tmp_path / "figure3.png"
    assert cli(["attention", str(run), "--video", str(video), "--out", str(out),
                "--block", "strongest", "--ratio-videos", "100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["blocks"]) == 5
    cross = report["cross_time"]
    region = msr.FRAMES[cross["direction"]]
    assert report[cross["direction"]]["test_videos"][region]["clips"] >= 50
    # The same network before training (frame pre-trained backbone, fresh blocks), measured
    # and chosen the same way: affinity spread uniformly, by every block, both ways.
    from nlrepro.proxy.pretrain import frames_weights
    from nlrepro.run.module import VideoClassifier

    torch.manual_seed(0)
    fresh = VideoClassifier.from_config(model.cfg,
                                        pretrained_path=frames_weights(model.cfg)).eval()
    before = msr.strongest_block(msr.block_ratios(fresh, model.cfg,
                                              ptruth.proxy_test_videos(video)[:100]))[2]
    assert 0.9 < before < 1.1, before
    # Uniform gives 1; the ceiling is 1 / uniform ≈ 2.5.  Six trained seeds (0-5) measured
    # 1.52 to 2.23 in their strongest block (seed 0: 1.64), the untrained blocks at most 1.013
    # (docs/PROXY.md "Session 6"): 1.4 is below the weakest seed and far above untrained.
    assert cross["ratio"] > 1.4, (
        f"{report['block']} {cross['direction']}: {cross['ratio']:.2f}× uniform after "
        f"training, {before:.2f}× before (test top-1 {accuracy:.1f}%); all blocks: "
        f"{report['blocks']}")


def test_best_picks_the_highest_top1_then_the_lower_val_loss(tmp_path):
    """``--best`` ranks the done Table 2c 5-block R50 seeds by test top-1, ties by the
    validation loss, never by anything about attention."""
    from nlrepro.sweep import expand, grid_path, load_grid, write_spec
    from nlrepro.utils import atomic_write_json

    results = tmp_path / "results"
    specs = {s.seed: s for s in expand(load_grid(grid_path(cmd.AUTO_TABLE)), "proxy", results, [])
             if cmd.AUTO_ROW in s.labels and s.depth == cmd.AUTO_DEPTH}
    assert sorted(specs) == [0, 1, 2]

    def done(seed: int, top1: float, val_loss: float) -> None:
        spec = specs[seed]
        write_spec(spec)
        (spec.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (spec.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
        atomic_write_json(spec.run_dir / "summary.json", {
            "metrics": {"test/top1_video": top1, "val/loss": val_loss}})
        (spec.run_dir / "done").write_text("")

    done(0, 100.0, 0.03)
    done(1, 99.0, 0.001)
    done(2, 100.0, 0.02)
    assert cmd.auto_checkpoint("proxy", results, 0, [], best=True).parent.parent == specs[2].run_dir
    assert cmd.auto_checkpoint("proxy", results, 1, []).parent.parent == specs[1].run_dir
