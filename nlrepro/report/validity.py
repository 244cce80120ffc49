"""The proxy's validity test on the claims card: every NL row of Table 2a ≥ C2D + margin.

The scorecard judges the paper's claims by sign, as the paper states them. On the proxy a
non-local block either learns the task's relation (tens of points over C2D) or does not (its
ReLU or its γ never opens, a few tenths over C2D), and the sign alone cannot tell these
apart. ``experiments/validity.yaml`` states the margin; the card reports each row and seed
that misses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from nlrepro.choices import PROXY_FAMILY
from nlrepro.config.load import profile_family
from nlrepro.errors import ConfigError
from nlrepro.report.rows import RowRef
from nlrepro.report.tables import ROOT

VALIDITY_YAML = ROOT / "experiments" / "validity.yaml"


@dataclass(frozen=True)
class Validity:
    margin: float
    baseline: str
    misses: list[tuple[str, int, float]]  # (row, seed, gain over the baseline)
    missing: list[str]                    # rows (or the baseline) without a run on a seed

    @property
    def verdict(self) -> str:
        if self.missing:
            return "not run"
        return "fails" if self.misses else "holds"

    def to_markdown(self) -> str:
        base = RowRef.parse(self.baseline).row
        head = (f"**Proxy validity** (experiments/validity.yaml): every non-local row of "
                f"Table 2a beats {base} by at least {self.margin:g} points on every seed: "
                f"**{self.verdict}**")
        if self.missing:
            return head + f" (no run: {', '.join(self.missing)})."
        if self.misses:
            return head + " (" + "; ".join(f"{RowRef.parse(row).row} seed {seed} {gain:+.1f}"
                                           for row, seed, gain in self.misses) + ")."
        return head + "."


def load_validity(path: Path = VALIDITY_YAML) -> dict:
    spec = yaml.safe_load(Path(path).read_text()) or {}
    want = {"margin", "baseline", "rows"}
    if not isinstance(spec, dict) or set(spec) != want:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ConfigError(f"{path}: expected keys {sorted(want)}, got {got}")
    return spec


def check(of: Callable[[RowRef], pd.DataFrame], seeds: list[int] | None, profile: str,
          spec: dict | None = None) -> Validity | None:
    """``of(row) -> that row's runs indexed by seed`` (``claims.Runs.of``) -> the test, or None
    for a profile outside the proxy family. Judged on ``seeds``, else on the seeds the
    baseline has."""
    if profile_family(profile) != PROXY_FAMILY:
        return None
    spec = load_validity() if spec is None else spec
    base = of(RowRef.parse(spec["baseline"]))
    wanted = sorted(seeds) if seeds else sorted(int(s) for s in base.index)
    misses, missing = [], []
    if not len(base) or not set(wanted) <= set(base.index):
        missing.append(str(spec["baseline"]))
    for row in spec["rows"]:
        frame = of(RowRef.parse(row))
        if not set(wanted) <= set(frame.index) or not wanted:
            missing.append(str(row))
            continue
        gains = frame.loc[wanted, "top1_video"] - base.reindex(wanted)["top1_video"]
        misses += [(str(row), int(s), float(g)) for s, g in gains.items()
                   if pd.notna(g) and g < float(spec["margin"])]
    return Validity(float(spec["margin"]), str(spec["baseline"]), misses, missing)
