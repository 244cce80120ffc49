"""Hand-made runs.csv frames for the report's tests."""

import pandas as pd

from nlrepro.report.rows import RowRef


def runs_of(rows: dict[str, list[float]]) -> pd.DataFrame:
    """``{"2c/baseline/50": [50, 52, 49]}`` -> a runs.csv frame, one run per seed."""
    out = []
    for ref, values in rows.items():
        r = RowRef.parse(ref)
        for seed, v in enumerate(values):
            out.append({"table": r.table, "row": r.row, "depth": r.depth, "seed": seed,
                        "top1_video": v, "run_id": f"{r.table}-{r.row}-{r.depth}-{seed}"})
    return pd.DataFrame(out)
