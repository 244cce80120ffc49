"""The paper's findings checked against our runs: ``paper_tables/<profile>/claims.{md,csv,png}``.

Each finding of Table 2 (``paper_tables/claims.yaml``) is a list of comparisons "row A beats
row B".  A comparison is paired by seed (``d_s = top1(A, s) - top1(B, s)``), so that a seed's
luck in one row is compared with the same seed's luck in the other, and judged:

- **holds**: ``d_s > 0`` on every seed;
- **fails**: the mean of ``d_s`` is below zero;
- **unresolved**: anything else (mixed signs, or a zero mean);
- **at ceiling**: both rows' means are at least ``CEILING``; the task cannot rank them.  Where
  the runs record top-1 over the clips that show their events (``top1_inview``: the timeline
  proxy's short clips cannot show the kinds that happen before them), that is the mean used,
  since the attainable top-1 over all clips is then below 100%; but not when the two rows
  read clips of different lengths (Table 2g against 2f), which show different events: there
  a longer clip's gain is what is measured, and the mean over all clips is used;
- **not run**: a row has no finished run, or the two rows share no seed.

A claim takes the worst verdict of its comparisons, in the order of ``SEVERITY``.  The paper's
side of every comparison comes from ``paper_table2.csv``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from nlrepro.choices import DEFAULT_PROFILE
from nlrepro.config import add_profile_argument
from nlrepro.errors import ConfigError
from nlrepro.info import model_info
from nlrepro.report.collect import INVIEW_COLUMN
from nlrepro.report.plots import plot_claims
from nlrepro.report.rows import RowRef
from nlrepro.report.tables import FOOTNOTES, ROOT, current_runs, load_paper
from nlrepro.report.validity import Validity, check
from nlrepro.sweep.grid import expand, grid_path, load_grid
from nlrepro.utils import atomic_write_text

CLAIMS_YAML = ROOT / "paper_tables" / "claims.yaml"
CEILING = 99.0
# Worst first: a claim takes the first of these that any of its comparisons has.
SEVERITY = ("fails", "not run", "at ceiling", "unresolved", "holds")
CLAIM_KEYS = {"id", "table", "claim", "compare", "rule", "baseline", "rows", "flops_below"}
RULES = ("beats", "alike")


@dataclass
class Comparison:
    """``better`` beats ``worse``: the paper's difference and ours, per seed."""

    name: str
    paper: float
    diffs: pd.Series                      # per seed, ours
    means: tuple[float | None, float | None]
    run_ids: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return judge(self.diffs, *self.means)


@dataclass
class ClaimResult:
    id: str
    table: str
    claim: str
    verdict: str
    paper: float                          # the paper's weakest margin
    comparisons: list[Comparison]
    detail: str = ""

    @property
    def binding(self) -> Comparison | None:
        """The comparison with our smallest mean margin (the one that decides the claim)."""
        run = [c for c in self.comparisons if len(c.diffs)]
        return min(run, key=lambda c: c.diffs.mean()) if run else None


def judge(diffs: pd.Series, mean_a: float | None, mean_b: float | None) -> str:
    """The verdict of one paired comparison (module docstring)."""
    if diffs is None or len(diffs) == 0 or mean_a is None or mean_b is None:
        return "not run"
    if mean_a >= CEILING and mean_b >= CEILING:
        return "at ceiling"
    if bool((diffs > 0).all()):
        return "holds"
    if diffs.mean() < 0:
        return "fails"
    return "unresolved"


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=SEVERITY.index) if verdicts else "not run"


def load_claims(path: Path = CLAIMS_YAML, paper: pd.DataFrame | None = None) -> list[dict]:
    """Read the claims (data only) and check every row they name against the paper's table."""
    claims = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(claims, list):
        raise ConfigError(f"{path}: expected a list of claims")
    paper = load_paper() if paper is None else paper
    known = {(str(t), r, int(d)) for t, r, d in zip(paper["table"], paper["row"], paper["depth"])}
    for c in claims:
        bad = set(c) - CLAIM_KEYS
        if bad or not {"id", "table", "claim"} <= set(c):
            raise ConfigError(f"{path}: claim {c.get('id')!r} has unknown keys {sorted(bad)} or "
                              f"lacks id/table/claim; valid: {sorted(CLAIM_KEYS)}")
        rule = c.get("rule", "beats")
        if rule not in RULES:
            raise ConfigError(f"{path}: claim {c['id']}: rule {rule!r}; valid: {list(RULES)}")
        refs = [r for pair in c.get("compare") or [] for r in pair] + list(c.get("rows") or [])
        refs += ([c["baseline"]] if c.get("baseline") else []) + list(c.get("flops_below") or [])
        for ref in map(RowRef.parse, refs):
            if (ref.table, ref.row, ref.depth) not in known:
                rows = sorted({r for t, r, _ in known if t == ref.table})
                raise ConfigError(f"{path}: claim {c['id']}: no paper row {ref}; rows of table "
                                  f"{ref.table}: {rows}")
    return claims


class Runs:
    """Our finished runs, per paper row: the runs each table's grid counts today."""

    def __init__(self, runs: pd.DataFrame, profile: str, results: Path,
                 seeds: list[int] | None = None) -> None:
        self.profile, self.results = profile, Path(results)
        self.seeds = None if seeds is None else sorted(set(int(s) for s in seeds))
        self._runs = runs
        self._tables: dict[str, pd.DataFrame] = {}
        self._specs: dict[str, list] = {}

    def specs(self, table: str) -> list:
        if table not in self._specs:
            self._specs[table] = expand(load_grid(grid_path(table)), self.profile, self.results,
                                        seeds=self.seeds)
        return self._specs[table]

    def of(self, ref: RowRef) -> pd.DataFrame:
        """``seed -> (top1_video, run_id, ceiling)`` of one row, indexed by seed; ``ceiling``
        is what the ceiling is judged on (top-1 over the clips in view where recorded)."""
        if ref.table not in self._tables:
            mine = self._runs[self._runs["table"].astype(str) == ref.table]
            if self.seeds is not None:
                mine = mine[mine["seed"].isin(self.seeds)]
            self._tables[ref.table] = current_runs(mine, self.specs(ref.table)) \
                if len(mine) else mine
        t = self._tables[ref.table]
        rows = t[(t["row"] == ref.row) & (t["depth"] == ref.depth)].dropna(subset=["top1_video"])
        inview = rows[INVIEW_COLUMN] if INVIEW_COLUMN in rows.columns else rows["top1_video"]
        rows = rows.assign(ceiling=inview.fillna(rows["top1_video"]))
        frames = rows["frames"] if "frames" in rows.columns else pd.Series(0, index=rows.index)
        rows = rows.assign(frames=frames)
        return rows.drop_duplicates("seed").set_index("seed")[
            ["top1_video", "run_id", "ceiling", "frames"]]


def _paper(paper: pd.DataFrame, ref: RowRef) -> float:
    p = paper[(paper["table"] == ref.table) & (paper["row"] == ref.row)
              & (paper["depth"] == ref.depth)]
    return float(p["top1"].iloc[0])


def _mean(frame: pd.DataFrame, column: str = "ceiling") -> float | None:
    """The mean the ceiling is judged on (``Runs.of``)."""
    return float(frame[column].mean()) if len(frame) else None


def compare(a: RowRef, b: RowRef, runs: Runs, paper: pd.DataFrame) -> Comparison:
    ra, rb = runs.of(a), runs.of(b)
    seeds = ra.index.intersection(rb.index).sort_values()
    diffs = ra.loc[seeds, "top1_video"] - rb.loc[seeds, "top1_video"]
    ids = list(dict.fromkeys(list(ra.loc[seeds, "run_id"]) + list(rb.loc[seeds, "run_id"])))
    # Clips of different lengths show different events: the ceiling over all clips then.
    same_clips = set(ra.loc[seeds, "frames"]) == set(rb.loc[seeds, "frames"])
    column = "ceiling" if same_clips else "top1_video"
    means = (_mean(ra.loc[seeds], column), _mean(rb.loc[seeds], column)) if len(seeds) \
        else (None, None)
    return Comparison(f"{a} > {b}", _paper(paper, a) - _paper(paper, b), diffs.astype(float),
                      means, ids)


def alike(rows: list[RowRef], base: RowRef, runs: Runs, paper: pd.DataFrame) -> Comparison:
    """Rows perform alike: per seed, smallest gain over the baseline minus the rows' spread."""
    frames = [runs.of(r) for r in rows]
    rb = runs.of(base)
    seeds = rb.index
    for f in frames:
        seeds = seeds.intersection(f.index)
    seeds = seeds.sort_values()
    values = pd.DataFrame({str(r): f.loc[seeds, "top1_video"] for r, f in zip(rows, frames)})
    ceiling = pd.DataFrame({str(r): f.loc[seeds, "ceiling"] for r, f in zip(rows, frames)})
    gain = values.sub(rb.loc[seeds, "top1_video"], axis=0).min(axis=1)
    spread = values.max(axis=1) - values.min(axis=1)
    p = pd.Series([_paper(paper, r) for r in rows])
    paper_margin = float(p.min() - _paper(paper, base) - (p.max() - p.min()))
    ids = list(dict.fromkeys([i for f in frames + [rb] for i in f.loc[seeds, "run_id"]]))
    # "At ceiling" when every row sits there: then they tie because the task cannot rank them.
    means = (float(ceiling.mean().min()), float(ceiling.mean().min())) if len(seeds) \
        else (None, None)
    return Comparison(f"min gain over {base.row} − spread of {len(rows)} rows", paper_margin,
                      (gain - spread).astype(float), means, ids)


def _flops(ref: RowRef, runs: Runs) -> float:
    spec = next(s for s in runs.specs(ref.table)
                if s.depth == ref.depth and ref.row in s.labels)
    return float(model_info(spec.config)["gflops"])


def evaluate(claim: dict, runs: Runs, paper: pd.DataFrame) -> ClaimResult:
    """One claim -> its comparisons and verdict."""
    if claim.get("rule", "beats") == "alike":
        comps = [alike([RowRef.parse(r) for r in claim["rows"]], RowRef.parse(claim["baseline"]),
                       runs, paper)]
    else:
        comps = [compare(RowRef.parse(a), RowRef.parse(b), runs, paper)
                 for a, b in claim["compare"]]
    verdict = worst([c.verdict for c in comps])
    detail = ""
    if claim.get("flops_below"):
        first = RowRef.parse(claim["compare"][0][0])
        mine = _flops(first, runs)
        others = {str(r): _flops(RowRef.parse(r), runs) for r in claim["flops_below"]}
        cheaper = all(mine < v for v in others.values())
        detail = (f"GFLOPs {mine:.3g} vs " + ", ".join(f"{v:.3g}" for v in others.values())
                  + (" (fewer)" if cheaper else " (not fewer)"))
        if not cheaper and verdict != "not run":
            verdict = "fails"
    return ClaimResult(str(claim["id"]), str(claim["table"]), str(claim["claim"]), verdict,
                       min(c.paper for c in comps), comps, detail)


def scorecard(runs: pd.DataFrame, profile: str = DEFAULT_PROFILE, results: Path = Path("results"),
              claims: list[dict] | None = None,
              seeds: list[int] | None = None, pool: Runs | None = None) -> list[ClaimResult]:
    """Every claim judged on the grids' seeds, or on ``seeds`` instead (held-out seeds run with
    ``nlrepro sweep --seeds``, to see whether a verdict survives other seeds). ``pool``: the
    runs already gathered for these arguments, to share with the validity test."""
    paper = load_paper()
    claims = load_claims(paper=paper) if claims is None else claims
    pool = Runs(runs, profile, results, seeds) if pool is None else pool
    return [evaluate(c, pool, paper) for c in claims]


# ---- rendering --------------------------------------------------------------------------
def _signs(diffs: pd.Series) -> str:
    return "".join("+" if d > 0 else "−" if d < 0 else "0" for d in diffs) or "—"


def _ours(c: Comparison | None) -> str:
    if c is None or not len(c.diffs):
        return "—"
    if len(c.diffs) == 1:
        return f"{c.diffs.iloc[0]:+.1f}"
    return f"{c.diffs.mean():+.1f} ± {c.diffs.std(ddof=1):.1f}"


def frame(results: list[ClaimResult]) -> pd.DataFrame:
    """The scorecard as printed: one row per claim."""
    return pd.DataFrame([{
        "id": r.id, "table": r.table, "claim (paper)": r.claim,
        "paper Δ": f"{r.paper:+.1f}", "ours Δ (mean ± std)": _ours(r.binding),
        "per-seed signs": " ".join(_signs(c.diffs) for c in r.comparisons),
        "verdict": r.verdict, "runs": len({i for c in r.comparisons for i in c.run_ids}),
    } for r in results])


def long_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per comparison, with the runs it used (``claims.csv``)."""
    return pd.DataFrame([{
        "id": r.id, "claim_verdict": r.verdict, "comparison": c.name, "paper_diff": c.paper,
        "ours_mean": c.diffs.mean() if len(c.diffs) else None,
        "ours_std": c.diffs.std(ddof=1) if len(c.diffs) > 1 else None,
        "seeds": " ".join(str(int(s)) for s in c.diffs.index),
        "diffs": " ".join(f"{d:+.1f}" for d in c.diffs), "verdict": c.verdict,
        "run_ids": " ".join(c.run_ids), "detail": r.detail,
    } for r in results for c in r.comparisons])


def points(results: list[ClaimResult]) -> pd.DataFrame:
    """One point per claim for the plot: the paper's weakest margin against ours."""
    return pd.DataFrame([{"id": r.id, "verdict": r.verdict, "paper": r.paper,
                          "ours": float(r.binding.diffs.mean()) if r.binding else float("nan")}
                         for r in results])


NOTES = [
    "Δ = top-1 of the row that the claim says is better minus the other's (video-level, "
    "points). A claim with several comparisons shows its weakest: the paper's smallest "
    "margin, and ours for the comparison with the smallest mean. Per-seed signs: one group per "
    "comparison, in claims.yaml's order, one sign per seed.",
    "Verdicts, per comparison, paired by seed: holds = the difference has the claimed sign on "
    f"every seed; fails = its mean has the wrong sign; unresolved = mixed signs; at ceiling = "
    f"both rows' means ≥ {CEILING:g}%, so the task cannot rank them; not run = a row has no "
    "finished run. A claim takes the worst verdict of its comparisons "
    f"({' > '.join(SEVERITY)}).",
    "C2 (the instantiations perform alike) is judged per seed on the smallest gain of an "
    "instantiation over C2D minus the spread (max − min) of the instantiations: it holds when "
    "that margin is positive on every seed, and is at ceiling when every instantiation's mean "
    f"is ≥ {CEILING:g}%.",
    "C12 also needs the NL C2D network to cost fewer multiply-adds than each I3D (our networks, "
    "`nlrepro info`); if it does not, C12 fails whatever the accuracies.",
]


def to_markdown(results: list[ClaimResult], profile: str, notes: list[str],
                seeds: list[int] | None = None, validity: Validity | None = None) -> str:
    n_hold = sum(r.verdict == "holds" for r in results)
    counts = pd.Series([r.verdict for r in results]).value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in SEVERITY[::-1] if v in counts)
    which = f" (seeds {', '.join(str(s) for s in seeds)})" if seeds else ""
    lines = [f"# The paper's claims on the {profile} runs{which}: {n_hold} of {len(results)} "
             "hold", "",
             summary + ".", ""]
    if validity is not None:
        lines += [validity.to_markdown(), ""]
    lines += [frame(results).to_markdown(index=False, disable_numparse=True), ""]
    lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    lines += ["", "Details (every comparison and the runs it used): claims.csv.", ""]
    for r in results:
        for c in r.comparisons:
            lines.append(f"- {r.id} {c.name}: paper {c.paper:+.1f}, ours "
                         f"{' '.join(f'{d:+.1f}' for d in c.diffs) or '—'} → {c.verdict}"
                         + (f"; {r.detail}" if r.detail and c is r.comparisons[0] else ""))
    return "\n".join(lines) + "\n"


def render(profile: str = DEFAULT_PROFILE, results: Path = Path("results"),
           out_dir: Path | None = None, plots: bool = True,
           seeds: list[int] | None = None) -> dict[str, Path]:
    """Write ``claims.{md,csv,png}`` from ``results/<profile>/runs.csv``; with ``seeds``, the
    card of those seeds goes to ``paper_tables/<profile>/seeds-<a>-<b>/`` by default, so the
    committed card of the grids' seeds is not overwritten."""
    seeds = sorted(set(seeds)) if seeds else None  # one spelling for the title and the folder
    runs_csv = Path(results) / profile / "runs.csv"
    if not runs_csv.is_file():
        raise ConfigError(f"{runs_csv} not found: run `nlrepro collect --profile {profile}` "
                          "first")
    runs = pd.read_csv(runs_csv, dtype={"table": str})
    pool = Runs(runs, profile, results, seeds)
    scored = scorecard(runs, profile, results, seeds=seeds, pool=pool)
    validity = check(pool.of, seeds, profile)
    notes = list(NOTES)
    extra = (yaml.safe_load(FOOTNOTES.read_text()) or {}).get(f"claims_{profile}") \
        if FOOTNOTES.is_file() else None
    if extra:
        notes.append(" ".join(str(extra).split()))
    if out_dir is None:
        out_dir = ROOT / "paper_tables" / profile
        if seeds:
            out_dir = out_dir / ("seeds-" + "-".join(str(s) for s in seeds))
    out_dir = Path(out_dir)
    paths = {"md": out_dir / "claims.md", "csv": out_dir / "claims.csv"}
    atomic_write_text(paths["md"], to_markdown(scored, profile, notes, seeds, validity))
    atomic_write_text(paths["csv"], long_frame(scored).to_csv(index=False))
    if plots:
        paths["png"] = plot_claims(points(scored), out_dir / "claims.png", profile)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_profile_argument(parser)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None, help="default paper_tables/<profile>")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="judge on these seeds instead of the grids' (e.g. held-out seeds "
                             "run with `nlrepro sweep --seeds 3 4`); default out "
                             "paper_tables/<profile>/seeds-3-4")


def main(args: argparse.Namespace) -> int:
    paths = render(args.profile, args.results, args.out, not args.no_plots, args.seeds)
    print(Path(paths["md"]).read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
