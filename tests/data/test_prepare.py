"""``nlrepro prepare-kinetics`` on a tiny raw download written here with PyAV, read with decord."""

import json
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from nlrepro.cli import main as cli
from nlrepro.config import ConfigError
from nlrepro.data.prepare import prepare, target_size

HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def write_video(path: Path, codec: str, width: int, height: int, frames: int, fps: int = 10,
                audio: bool = False) -> list[float]:
    """Frames of distinct grey levels (so order and count can be checked); their means."""
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = [float(20 + 200 * i / max(1, frames - 1)) for i in range(frames)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if audio:
            aus = out.add_stream("aac", rate=16000)
        for i, level in enumerate(levels):
            img = np.full((height, width, 3), int(level), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if audio:
            samples = np.zeros((1, 16000 * frames // fps), np.float32)
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            out.mux(aus.encode(af))
            out.mux(aus.encode(None))
    return levels


def expected_size(width: int, height: int) -> tuple[int, int]:
    """Written out independently: shorter side 256, longer side scaled then rounded to even."""
    short, long_ = min(width, height), max(width, height)
    long_new = int(2 * round(long_ * 256 / short / 2))
    return (256, long_new) if width <= height else (long_new, 256)


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """Raw folder (mixed containers, sizes, one broken, one full video) + release CSVs."""
    root = tmp_path_factory.mktemp("k400")
    raw, csvs = root / "raw", root / "csv"
    csvs.mkdir()
    videos = {  # name -> (file, codec, w, h, frames)
        "aaaaaaaaaaa_000010_000020": ("part1/aaaaaaaaaaa_000010_000020.mp4", "mpeg4", 171, 128, 8),
        "bbbbbbbbbbb_000000_000010": ("bbbbbbbbbbb_000000_000010.mkv", "libx264", 320, 240, 6),
        "c-c_c-c_c-c_000005_000015": ("x/y/c-c_c-c_c-c_000005_000015.webm", "libvpx-vp9",
                                      240, 320, 5),
        "ggggggggggg_000000_000010": ("ggggggggggg_000000_000010.mkv", "mpeg4", 640, 360, 4),
    }
    levels = {}
    for name, (rel, codec, w, h, n) in videos.items():
        levels[name] = write_video(raw / rel, codec, w, h, n, audio=name.startswith("b"))
    # A full YouTube video (3 s at 10 fps) named by its id: the clip [1 s, 2 s) is cut out.
    full = write_video(raw / "dddddddddd1.mp4", "libx264", 200, 150, 30)
    levels["dddddddddd1_000001_000002"] = full[10:20]
    (raw / "eeeeeeeeeee_000000_000010.mp4").write_bytes(b"\x00not a video" * 100)
    (csvs / "train.csv").write_text(HEADER + "\n".join([
        "abseiling,aaaaaaaaaaa,10,20,train,0",
        "playing cello,bbbbbbbbbbb,0,10,train,0",
        "zumba,c-c_c-c_c-c,5,15,train,0",
        "zumba,dddddddddd1,1,2,train,0",
        "abseiling,eeeeeeeeeee,0,10,train,0",
        "playing cello,fffffffffff,0,10,train,0"]) + "\n")
    (csvs / "validate.csv").write_text(HEADER + "\n".join([
        "zumba,ggggggggggg,0,10,val,0",
        "abseiling,hhhhhhhhhhh,3,13,val,0"]) + "\n")
    sizes = {name: (w, h) for name, (_, _, w, h, _) in videos.items()}
    sizes["dddddddddd1_000001_000002"] = (200, 150)
    return {"raw": raw, "csv": csvs, "out": root / "out", "levels": levels, "sizes": sizes}


def counts(report, split):
    c = report["splits"][split]
    return {k: c[k] for k in ("in_csv", "found", "converted", "skipped", "failed", "missing",
                              "listed")}


def test_target_size_rule():
    assert target_size(171, 128) == (342, 256) == expected_size(171, 128)
    assert target_size(240, 320) == (256, 342)
    assert target_size(640, 360) == (456, 256)     # 455.1 -> nearest even
    assert target_size(1920, 1080) == (456, 256)
    assert target_size(256, 256) == (256, 256)
    with pytest.raises(ValueError, match="invalid frame size 0x10"):
        target_size(0, 10)


def test_prepare_converts_lists_reports_and_resumes(download, capsys):
    raw, out, csvs = download["raw"], download["out"], download["csv"]
    rc = cli(["prepare-kinetics", str(raw), str(out), "--csv-dir", str(csvs), "--workers", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train: 6 in the CSV, 5 found, 4 converted, 0 skipped (already done), 1 failed, " \
           "1 missing -> 4 listed" in printed
    assert "failed train/abseiling/eeeeeeeeeee_000000_000010.mp4: InvalidDataError" in printed

    report = json.loads((out / "prepare_report.json").read_text())
    assert counts(report, "train") == {"in_csv": 6, "found": 5, "converted": 4, "skipped": 0,
                                       "failed": 1, "missing": 1, "listed": 4}
    assert counts(report, "val") == {"in_csv": 2, "found": 1, "converted": 1, "skipped": 0,
                                     "failed": 0, "missing": 1, "listed": 1}
    assert report["splits"]["train"]["missing_ids"] == ["fffffffffff_000000_000010"]
    assert report["trimmed_full_videos"] == 1
    assert [f["video"] for f in report["failures"]] == [
        "train/abseiling/eeeeeeeeeee_000000_000010.mp4"]

    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"abseiling": 0, "playing cello": 1, "zumba": 2}
    assert (out / "train.csv").read_text().splitlines() == [
        "train/abseiling/aaaaaaaaaaa_000010_000020.mp4 0",
        "train/playing cello/bbbbbbbbbbb_000000_000010.mp4 1",
        "train/zumba/c-c_c-c_c-c_000005_000015.mp4 2",
        "train/zumba/dddddddddd1_000001_000002.mp4 2"]
    assert (out / "val.csv").read_text().splitlines() == [
        "val/zumba/ggggggggggg_000000_000010.mp4 2"]

    for line in (out / "train.csv").read_text().splitlines() + \
            (out / "val.csv").read_text().splitlines():
        rel = line.rsplit(" ", 1)[0]
        name = Path(rel).stem
        w0, h0 = download["sizes"][name]
        vr = decord.VideoReader(str(out / rel))
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
        h, w = frames.shape[1:3]
        assert (w, h) == expected_size(w0, h0) and w % 2 == 0 and h % 2 == 0
        assert min(w, h) == 256 and abs(w / h - w0 / h0) <= 2 / 256
        assert vr.get_avg_fps() == pytest.approx(10.0)   # native rate kept
        # Every frame, in order (the full video: only its 10 frames in [1 s, 2 s)).
        np.testing.assert_allclose(frames.reshape(len(vr), -1).mean(1),
                                   download["levels"][name], atol=4)
        with av.open(str(out / rel)) as c:
            assert not c.streams.audio and c.streams.video[0].codec_context.name == "h264"

    # Second run: nothing to do, same lists, outputs untouched.
    listed = [out / ln.rsplit(" ", 1)[0] for ln in (out / "train.csv").read_text().splitlines()]
    mtimes = [p.stat().st_mtime_ns for p in listed]
    lists = (out / "train.csv").read_text()
    again = prepare(raw, out, csvs, workers=1, progress=False)
    assert counts(again, "train") == {"in_csv": 6, "found": 5, "converted": 0, "skipped": 4,
                                      "failed": 1, "missing": 1, "listed": 4}
    assert [p.stat().st_mtime_ns for p in listed] == mtimes
    assert (out / "train.csv").read_text() == lists


def test_partial_file_of_a_killed_run_is_not_taken_as_done(download):
    raw, out, csvs = download["raw"], download["out"], download["csv"]
    if not (out / "train.csv").is_file():
        prepare(raw, out, csvs, workers=1, progress=False)
    final = out / "train/zumba/c-c_c-c_c-c_000005_000015.mp4"
    final.unlink()
    part = final.with_name(f".{final.name}.part")
    part.write_bytes(b"half a video")
    report = prepare(raw, out, csvs, workers=1, progress=False)
    c = counts(report, "train")
    assert (c["converted"], c["skipped"], c["listed"]) == (1, 3, 4)
    assert not part.exists()
    assert len(decord.VideoReader(str(final))) == 5
    assert not list(out.rglob("*.part"))


def test_failed_conversion_leaves_no_file(download, tmp_path):
    from nlrepro.data.prepare import convert

    dst = tmp_path / "o" / "x.mp4"
    with pytest.raises(av.error.InvalidDataError):
        convert(str(download["raw"] / "eeeeeeeeeee_000000_000010.mp4"), str(dst), 0, 10, False)
    assert not dst.exists() and not list(dst.parent.iterdir())


def test_bad_inputs_are_named(tmp_path, download):
    with pytest.raises(ConfigError, match="has no train.csv; expected train.csv and "
                                          "validate.csv or val.csv"):
        prepare(download["raw"], tmp_path / "o", tmp_path)
    (tmp_path / "train.csv").write_text("youtube_id,time_start\nabc,1\n")
    with pytest.raises(ConfigError, match=r"missing columns \['label', 'time_end'\]"):
        prepare(download["raw"], tmp_path / "o", tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        prepare(tmp_path / "nope", tmp_path / "o", download["csv"])


def test_lists_are_read_by_the_annotations_module(download):
    """Our lists, and the release CSVs themselves, resolve to the converted videos."""
    from nlrepro.data.annotations import ClassIndex, read_list

    out = download["out"]
    if not (out / "train.csv").is_file():
        prepare(download["raw"], out, download["csv"], workers=1, progress=False)
    classes = ClassIndex.load(out / "classes.json")
    assert classes.names == ("abseiling", "playing cello", "zumba")
    ours = read_list(out / "train.csv", "path_label", out, classes)
    assert [(r.path.parent.name, r.label) for r in ours] == [
        ("abseiling", 0), ("playing cello", 1), ("zumba", 2), ("zumba", 2)]
    assert all(r.path.is_file() for r in ours)
    release = read_list(download["csv"] / "train.csv", "kinetics_csv", out, classes)
    assert {r.path for r in release if r.path.is_file()} == {r.path for r in ours}
    assert len(release) == 6 and {r.path.stem for r in ours} <= {r.video_id for r in release}
