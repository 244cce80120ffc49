"""``nlrepro attention``: the paper's Figure 3 — where a trained non-local block looks.

For a proxy clip the generator is re-run to know where cue and probes are
(``proxy.truth``); ``--query auto`` then picks a query of the direction the block uses more,
and the ratios (on the drawn clip and averaged over ``--ratio-videos`` test clips) are
printed in the JSON report, which is also saved next to the figure (``figure3.png`` ->
``figure3.json``).

``CKPT = auto`` is ``make figure3``: Table 2c's 5-block R50 run of ``--profile`` (the model the
paper's Figure 3 comes from) through the sweep machinery (the same run folder as
``make table2c``; reused when done, trained here on the proxy when missing).
``--block strongest`` draws the block whose lookup between the proxy's two events is the
largest multiple of uniform on the test clips; the report lists every block's ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from nlrepro.choices import PROXY_FAMILY
from nlrepro.config import ConfigError, add_profile_argument, add_set_argument, profile_family
from nlrepro.figure3.capture import (AttentionMap, capture, checkpoint_path, load_classifier,
                                     load_clip, pick_block, video_path)
from nlrepro.figure3.draw import draw, save_figure
from nlrepro.figure3.measure import (EXAMPLE, FRAMES, STRONGEST, auto_queries, block_ratios,
                                     example_video, headline_ratios, lookup_masks, mean_ratios,
                                     peakedness, proxy_masks, proxy_ratios, strongest_block,
                                     parse_query, strongest_queries, top_keys, typical_mass)
from nlrepro.proxy.truth import proxy_test_videos, proxy_truth
from nlrepro.run import rundir
from nlrepro.run.train import train_run_dir
from nlrepro.sweep.grid import expand, grid_path, load_grid, reuse_done_twin, write_spec
from nlrepro.utils import atomic_write_text, setup_logging

ROOT = Path(__file__).resolve().parents[2]
# The paper's Figure 3 shows "a non-local block in res3 computed by a 5-block non-local model":
# Table 2c's 5-block R50 row (embedded Gaussian; on the proxy every res3 and res4 block).
AUTO_TABLE, AUTO_ROW, AUTO_DEPTH = "2c", "5-block", 50


def auto_checkpoint(profile: str, results: Path, seed: int, sets: list[str],
                    best: bool = False) -> Path:
    """The checkpoint of Table 2c's 5-block R50 run (``AUTO_*``) for ``seed``.

    The run is the table's own (same config hash), so ``make table2c`` and ``make figure3``
    share it: a done run (or a done twin under another table) is reused; on the proxy a
    missing one is trained here.  ``best``: of the row's seeds that are done, the one with the
    highest test top-1, ties broken by the lower validation loss (a figure of what a trained
    block does shows the best-trained model, chosen by its fit, never by how its attention
    looks); ``seed`` when none is done.
    """
    specs = [s for s in expand(load_grid(grid_path(AUTO_TABLE)), profile, results, sets)
             if AUTO_ROW in s.labels and s.depth == AUTO_DEPTH]
    spec = next((s for s in specs if s.seed == seed), None)
    if best:
        done = [s for s in specs if reuse_done_twin(s, results)]
        metrics = {s.seed: (rundir.read_summary(s.run_dir) or {}).get("metrics", {}) for s in done}
        ranked = sorted((s for s in done if metrics[s.seed].get("test/top1_video") is not None),
                        key=lambda s: (-metrics[s.seed]["test/top1_video"],
                                       metrics[s.seed].get("val/loss", float("inf")), s.seed))
        spec = ranked[0] if ranked else spec
    if spec is None:
        raise ConfigError(f"--seed {seed}: Table {AUTO_TABLE} runs seeds "
                          f"{sorted(s.seed for s in specs)} on profile {profile!r}")
    if not reuse_done_twin(spec, results):
        if profile_family(profile) != PROXY_FAMILY:
            raise ConfigError(f"'auto' trains only on a proxy profile; run Table {AUTO_TABLE} "
                              f"first (`PROFILE={profile} make table{AUTO_TABLE}`) or pass the "
                              f"checkpoint of a trained NL run")
        write_spec(spec)
        train_run_dir(spec.run_dir)
    summary = rundir.read_summary(spec.run_dir) or {}
    return checkpoint_path(Path(summary.get("reused_from") or spec.run_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", metavar="CKPT",
                        help="a .ckpt file, a run folder, or 'auto' (Table 2c's 5-block R50 "
                             "run of --profile, the paper's Figure 3 model; trained if missing "
                             "on proxy)")
    parser.add_argument("--video", default="0",
                        help="a video file, an index into the run's test list (default 0), or "
                             f"'{EXAMPLE}' (proxy: the first test clip where a query of the "
                             "dominant direction puts at least the test clips' mean share of "
                             "its affinity on the other event's frames)")
    parser.add_argument("--block", default=None,
                        help="NL block, e.g. res3.1, or 'strongest' (proxy: the block whose "
                             "lookup between cue and probe is the largest multiple of uniform "
                             "on the --ratio-videos test clips); default: the first one")
    parser.add_argument("--query", action="append", default=None, metavar="auto|t,y,x",
                        help="query position on the block's grid; repeat for several "
                             "(default: auto = the most peaked affinity, on a probe for a "
                             "proxy clip)")
    parser.add_argument("--num-queries", type=int, default=1,
                        help="how many queries 'auto' picks (default 1)")
    parser.add_argument("--top", type=int, default=20, help="arrows per query (default 20)")
    parser.add_argument("--panels", type=int, default=4, help="frames shown (default 4)")
    parser.add_argument("--out", type=Path, default=None,
                        help="FILE.png or FILE.pdf (default: paper_tables/<profile>/figure3.png "
                             "for auto, else the run folder); the report goes next to it as "
                             "FILE.json")
    parser.add_argument("--ratio-videos", type=int, default=50,
                        help="proxy only: also average the cross-time mass ratios (probe->cue, "
                             "cue->probe) over the first N test videos (default 50; 0: only "
                             "the drawn clip)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the rendering and, for auto, of the Table 2c run used")
    parser.add_argument("--best", action="store_true",
                        help="auto: use the done Table 2c seed with the highest test top-1 "
                             "(ties: the lower validation loss)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one clip is small, and more threads "
                             "than idle cores slow CPU inference down by orders of magnitude)")
    add_profile_argument(parser, "profile of the 'auto' run")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder of the 'auto' run")
    add_set_argument(parser, "config overrides of the 'auto' run")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (a committed report names no
    machine's folders), else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _rounded(d: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in x.items()}
            for k, x in d.items()}


def main(args: argparse.Namespace) -> int:
    if args.top < 1 or args.num_queries < 1 or args.panels < 1 or args.threads < 1:
        raise ConfigError(f"--top {args.top}, --num-queries {args.num_queries}, "
                          f"--panels {args.panels} and --threads {args.threads} must be >= 1")
    if args.ratio_videos < 0:
        raise ConfigError(f"--ratio-videos {args.ratio_videos} must be >= 0")
    if args.out is not None and args.out.suffix.lower() not in (".png", ".pdf"):
        raise ConfigError(f"--out {str(args.out)!r}: the suffix must be .png or .pdf")
    setup_logging()  # nlrepro's log lines on stderr; stdout holds only the JSON report
    torch.manual_seed(args.seed)
    auto = str(args.ckpt) == "auto"
    ckpt = auto_checkpoint(args.profile, args.results, args.seed, args.sets, args.best) if auto \
        else checkpoint_path(Path(args.ckpt))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # after training (auto), which sets its own
    try:
        return _render(args, ckpt, auto)
    finally:
        torch.set_num_threads(threads)


def _measure(att: AttentionMap, masks: dict[str, torch.Tensor],
             mean: dict[str, Any]) -> dict[str, Any]:
    """Both directions of cross-time affinity (``DIRECTIONS``) on the drawn clip and, from
    ``mean`` (``mean_ratios``), on the test videos, each ``{"clip": ..., "test_videos": ...}``."""
    out: dict[str, Any] = {}
    for direction, result in proxy_ratios(att, masks).items():
        out[direction] = {"clip": {"error": str(result)} if isinstance(result, ValueError)
                          else _rounded(result)}
        if direction in mean:
            out[direction]["test_videos"] = _rounded(mean[direction])
    return out


def _headline(measured: dict[str, Any], name: str, region: str) -> float | None:
    """A direction's ratio: on the test videos when measured, else on the drawn clip."""
    d = measured[name]
    return (d.get("test_videos") or d["clip"]).get(region, {}).get("ratio")


def _dominant(ratios: dict[str, float | None]) -> str:
    known = {k: v for k, v in ratios.items() if v is not None}
    return max(known, key=known.get) if known else "probe_to_cue"


def _render(args: argparse.Namespace, ckpt: Path, auto: bool) -> int:
    model = load_classifier(ckpt)
    cfg = model.cfg
    example = args.video == EXAMPLE
    first = video_path(cfg, "0" if example else args.video)
    tests = proxy_test_videos(first)[:args.ratio_videos] \
        if proxy_truth(first) is not None else []
    if example and not tests:
        raise ConfigError(f"--video {EXAMPLE}: needs a proxy run and --ratio-videos >= 1 (the "
                          "example is chosen by the direction measured on the test clips)")
    block, per_block = args.block, {}
    if block not in (None, STRONGEST):
        try:
            pick_block(model, block)  # a wrong name fails before any clip is measured
        except ConfigError as err:
            raise ConfigError(f"{err}, or '{STRONGEST}'") from None
    if block == STRONGEST:
        if not tests:
            raise ConfigError(f"--block {STRONGEST}: needs a proxy run and --ratio-videos >= 1 "
                              "(the block is chosen by its ratios on the test clips)")
        per_block = block_ratios(model, cfg, tests)
        block = strongest_block(per_block)[0]
    mean = per_block.get(block) or (mean_ratios(model, cfg, tests, block) if tests else {})
    dominant = _dominant(headline_ratios(mean))
    path = example_video(model, cfg, tests, block, dominant,
                         typical_mass(mean, dominant)) if example else first
    clip = load_clip(cfg, path)
    att = capture(model, clip.tensor, block)
    masks = proxy_masks(att, clip)
    measured: dict[str, Any] = {}
    if masks is not None:
        measured = _measure(att, masks, mean)
        ratios = {d: _headline(measured, d, r) for d, r in FRAMES.items()}
        direction = _dominant(ratios)
        # Draw the direction the block uses more: its strongest lookup in this clip.
        source, target = lookup_masks(masks, direction)
    queries: list[int] = []
    for q in args.query or ["auto"]:
        if q != "auto":
            queries.append(parse_query(q, att.query))
        elif masks is not None and source.any():
            queries += strongest_queries(att, source, target, args.num_queries)
        else:
            queries += auto_queries(att, args.num_queries)
    probs = torch.softmax(att.logits, 0)
    nl = cfg.model.nonlocal_
    title = (f"{att.block} ({nl.instantiation}, {nl.scope}) on {clip.path.name}: "
             f"predicted class {int(probs.argmax())} ({float(probs.max()):.2f})")
    out = Path(args.out or (ROOT / "paper_tables" / args.profile / "figure3.png" if auto
                            else ckpt.parent.parent / f"figure3_{att.block}_{clip.path.stem}.png"))
    save_figure(draw(clip.frames, att, queries, args.top, args.panels, title), out)
    report: dict[str, Any] = {"out": str(out), "checkpoint": str(ckpt), "video": _shown(clip.path),
                              "block": att.block, "instantiation": nl.instantiation,
                              "scope": nl.scope, "grid": list(att.query.shape),
                              "key_grid": list(att.key.shape), "queries": []}
    peaked = peakedness(att)
    for q in queries:
        keys, weights = top_keys(att, q, args.top)
        report["queries"].append({
            "t,y,x": list(att.query.unravel(q)),
            "on_probe": None if masks is None else bool(masks["probes"][q]),
            "on_cue": None if masks is None else bool(masks["cue_queries"][q]),
            "peakedness": round(float(peaked[q]), 4),
            "top5 (key t,y,x: weight)": {",".join(map(str, att.key.unravel(k))): round(w, 5)
                                         for k, w in zip(keys[:5], weights[:5])}})
    if masks is not None:
        report.update(measured)
        # Headlines (1 = uniform): probe queries' mass on the cue's frames, and the larger of
        # the two directions, on test videos when measured.
        report["cue_mass_ratio"] = ratios["probe_to_cue"]
        report["cross_time"] = {"direction": direction, "ratio": ratios[direction],
                                "ratios": ratios}
        logging.getLogger("nlrepro.attention").info(
            "cross-time affinity (1 = uniform): probe->cue frames %s, cue->probe frames %s",
            ratios["probe_to_cue"], ratios["cue_to_probe"])
    if per_block:
        report["blocks"] = {name: {d: None if r is None else round(r, 4)
                                   for d, r in headline_ratios(block_mean).items()}
                            for name, block_mean in per_block.items()}
    text = json.dumps(report, indent=2)
    atomic_write_text(out.with_suffix(".json"), text + "\n")
    print(text)
    return 0
