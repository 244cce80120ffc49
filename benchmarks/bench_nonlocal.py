"""Non-local block speed and memory on CPU: the project's exact fast kernels vs the N × M form.

Standalone: ``python benchmarks/bench_nonlocal.py [--quick | --full]`` (or
``NLREPRO_BENCH_MODE``).  Writes ``results/bench/nonlocal.csv`` (every number) and
``results/bench/nonlocal.md`` (medians, ratios, targets).  Cases are the NL positions of
ResNet-50 C2D, batch 2: res3 (C=512, 4×28² and, T doubled, 8×28²), res4 (C=1024, 4×14²);
subsample on/off; all four instantiations.  "reference" is ``benchmarks/reference_nonlocal.py``
with the same parameters (VNL / PySlowFast layout; for concatenation the split-weight N×M
form, and the literal mmcv-style port where its N×M×C tensor fits under
``--literal-limit-gb``); "floor" is the block without its aggregation (convs only).  The last
case is a whole training step of NL C2D R50 (5 blocks, 8×224², batch 2) with fast kernels vs
``fast=False``.  Which cases run depends on the mode (``cases``): ``default`` is the set the
issue's targets are about and fits ``make bench``'s budget; ``full`` is the whole grid.
Times: median of ``--repeats`` (≥5) after a warm-up, variants interleaved; memory: peak-RSS
rise of forward+backward in a fresh subprocess per case (its variants one after the other).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402  (before torch: sets OMP_WAIT_POLICY)
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from reference_nonlocal import ConvFloor, ReferenceNonLocal  # noqa: E402

from nlrepro.models.non_local import NonLocalBlock  # noqa: E402

INSTANTIATIONS = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
STAGES = {"res3": (512, 28), "res4": (1024, 14)}
# Where the targets are judged: the shape its prototypes were measured at (res3 of
# C2D R50 on 32×224² clips after the temporal pools, 8×28², no subsampling, batch 2).
TARGET_SHAPE = ("res3", 8)
BATCH = 2
NAME = "nonlocal"
MODES = common.MODES
TRAIN_SIZE = {"quick": 112, "default": 224, "full": 224}  # training-step crop per mode
KERNEL_STAGES = {"quick": [("res4", 4)], "default": [("res4", 4)], "full": [("res3", 4)]}


@dataclass(frozen=True)
class Case:
    stage: str
    frames: int
    instantiation: str
    subsample: bool

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        c, hw = STAGES[self.stage]
        return (BATCH, c, self.frames, hw, hw)

    @property
    def nm(self) -> tuple[int, int]:
        _, _, t, h, w = self.shape
        return t * h * w, t * (h // 2) * (w // 2) if self.subsample else t * h * w

    @property
    def label(self) -> str:
        _, c, t, h, w = self.shape
        return (f"{self.instantiation} {self.stage} C={c} {t}×{h}² "
                f"{'sub' if self.subsample else 'nosub'}")


def cases(mode: str) -> list[Case]:
    """quick: a smoke run (res4 only); default: the cases the targets are about, within
    ``make bench``'s budget; full: every combination of the issue's grid."""
    if mode == "quick":
        return ([Case("res4", 4, i, False) for i in INSTANTIATIONS]
                + [Case("res4", 8, "dot_product", False)])
    if mode == "default":
        return ([Case(*TARGET_SHAPE, i, False) for i in INSTANTIATIONS]  # the targets
                + [Case("res3", 4, i, True) for i in INSTANTIATIONS]     # subsample on
                + [Case("res3", 8, "dot_product", True),                 # T doubled
                   Case("res4", 4, "concatenation", True)])              # the literal port fits
    grid = [("res3", 4), ("res3", 8), ("res4", 4)]
    return [Case(st, t, i, s) for st, t in grid for i in INSTANTIATIONS for s in (False, True)]


def describe(mode: str) -> str:
    """What the mode's case list covers, for the summary."""
    return {
        "quick": "smoke run: res4 4×14² without subsample, all four instantiations, plus "
                 "dot product at 8×14²; training step at 8×112².",
        "default": "res3 8×28² without subsample for all four instantiations (the targets, "
                   "judged at the shape the issue's prototypes were measured at); res3 4×28² "
                   "with subsample for all four; T doubled (8×28²) for dot product with "
                   "subsample; res4 4×14² for "
                   "concatenation with subsample only (the one case where the literal port "
                   "fits under the limit).  The floor (for the kernel ratio) runs for dot "
                   "product and concatenation only; the gaussian-kernel comparison runs at "
                   "res4.  These are cut to fit `make bench`'s ~8-minute budget; `--full` runs "
                   "the whole grid (res3 4×28² and 8×28², res4 4×14² × all four "
                   "instantiations × subsample on/off, the floor everywhere, gaussian kernels "
                   "at res3).",
        "full": "the whole grid: res3 4×28² and 8×28², res4 4×14² × all four "
                "instantiations × subsample on/off.",
    }[mode]


def literal_bytes(case: Case) -> int:
    """Peak of the literal concatenation port: its (2·C/2, N, M) tensor, kept and its grad, ~3×."""
    b, c, *_ = case.shape
    n, m = case.nm
    return 3 * b * c * n * m * 4


def variants(case: Case, literal_limit: float, mode: str = "full") -> list[str]:
    out = ["block", "reference"]
    if mode == "full" or case.instantiation in ("dot_product", "concatenation"):
        out.append("floor")
    if case.instantiation == "concatenation" and literal_bytes(case) <= literal_limit:
        out.append("literal")
    return out


def make(case: Case, variant: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The module and a float32 input; every variant has the same parameters (seed 0)."""
    torch.manual_seed(0)
    block = NonLocalBlock(case.shape[1], case.instantiation, subsample=case.subsample)
    torch.nn.init.ones_(block.bn.weight)  # not the identity, so outputs can be compared
    x = torch.randn(case.shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    if variant == "block":
        return block, x
    if variant == "floor":
        return ConvFloor.like(block), x
    return ReferenceNonLocal.like(block, "literal" if variant == "literal" else "split"), x


def forward(module: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        module(x)


def forward_backward(module: torch.nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x).sum().backward()


# ---- training step of NL C2D R50 -------------------------------------------------------------
def make_training_step(fast: bool, size: int = 224):
    """One SGD step of NL C2D R50 5-block on 8×size², batch 2; None if unavailable."""
    try:
        from nlrepro.config import ModelConfig, NonLocalConfig
        from nlrepro.models.resnet3d import build_model
    except ImportError as err:  # the backbone is written by another module owner
        print(f"training step skipped: {err}", file=sys.stderr)
        return None
    torch.manual_seed(0)
    cfg = ModelConfig(arch="c2d", depth=50, num_classes=400,
                      nonlocal_=NonLocalConfig(blocks=5, fast=fast))
    model = build_model(cfg, frames=8, crop=size, load_pretrained=False).train()
    blocks = model.nonlocal_blocks()
    assert len(blocks) == 5 and all(b.fast == fast for b in blocks.values())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, 8, size, size, generator=gen)
    y = torch.randint(0, 400, (BATCH,), generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


# ---- gaussian kernel: chunked (hand-written backward) vs v zero-padded to C for fused SDPA ----
def gaussian_kernels(repeats: int, stages: list[tuple[str, int]]) -> list[dict]:
    """Both exact kernels for the gaussian's unequal head dims (q, k: C; v: C/2), and the plain
    materialised softmax, on the (sets, n, d) tensors the block hands them."""
    from nlrepro.models import non_local as nl

    kernels = {"chunked": getattr(nl, "_softmax_attention", None),
               "padded_sdpa": getattr(nl, "_softmax_attention_padded", None)}
    kernels = {k: v for k, v in kernels.items() if v is not None}
    kernels["materialised"] = lambda q, k, v, s: ((q @ k.transpose(1, 2)) * s).softmax(-1) @ v
    rows = []
    for stage, t in stages:
        for sub in (False, True):
            case = Case(stage, t, "gaussian", sub)
            _, c, *_ = case.shape
            n, m = case.nm
            gen = torch.Generator().manual_seed(0)
            q = torch.randn(BATCH, n, c, generator=gen, requires_grad=True)
            k = torch.randn(BATCH, m, c, generator=gen, requires_grad=True)
            v = torch.randn(BATCH, m, c // 2, generator=gen, requires_grad=True)
            s = c ** -0.5

            def run(fn=None) -> None:
                for u in (q, k, v):
                    u.grad = None
                fn(q, k, v, s).sum().backward()
            times = common.interleaved({name: (lambda f=f: run(f)) for name, f in kernels.items()},
                                       repeats)
            for name in kernels:
                rows.append({"case": f"kernel {case.label}", "stage": stage, "frames": t,
                             "instantiation": "gaussian", "subsample": sub, "N": n, "M": m,
                             "C": c, "variant": name, "fwdbwd_ms": 1e3 * common.median(times[name]),
                             "repeats": repeats})
    return rows


# ---- memory child ------------------------------------------------------------------------------
def memory_child(spec: dict) -> dict[str, int]:
    """Peak-RSS rise of one forward+backward (or training step) per variant, each after its
    own warm-up call; the variants run one after the other, each freed before the next."""
    common.set_threads()
    out: dict[str, int] = {}
    if spec.get("train") is not None:
        for v, fast in spec["train"].items():
            step = make_training_step(fast, spec["size"])
            step()
            out[v] = common.peak_rss_rise(step)
            del step
            gc.collect()
        return out
    case = Case(**spec["case"])
    for v in spec["variants"]:
        module, x = make(case, v)
        forward_backward(module, x)
        module.zero_grad(set_to_none=True)
        x.grad = None
        out[v] = common.peak_rss_rise(lambda: forward_backward(module, x))
        del module, x
        gc.collect()
    return out


# ---- parent -----------------------------------------------------------------------------------
def run_case(case: Case, repeats: int, literal_limit: float, mode: str) -> list[dict]:
    names = variants(case, literal_limit, mode)
    built = {v: make(case, v) for v in names}
    with torch.no_grad():  # the comparison is also every variant's forward warm-up
        outs = {v: m(x) for v, (m, x) in built.items()}
        diffs = {v: (o - outs["block"]).abs().max().item() for v, o in outs.items()
                 if v != "floor"}
    del outs
    # The literal port's forward alone is not timed (its cost is the N×M×C tensor, reported
    # by forward+backward time and memory); everything else: forward, then forward+backward.
    fwd = common.interleaved({v: (lambda m=m, x=x: forward(m, x))
                              for v, (m, x) in built.items() if v != "literal"},
                             repeats, warmup=0)
    fb = common.interleaved({v: (lambda m=m, x=x: forward_backward(m, x))
                             for v, (m, x) in built.items()}, repeats)
    del built
    gc.collect()
    mem = common.measure_in_subprocess(
        Path(__file__), {"case": asdict(case), "variants": [v for v in names if v != "floor"]})
    rows = []
    n, m = case.nm
    for v in names:
        rows.append({**asdict(case), "case": case.label, "C": case.shape[1], "N": n, "M": m,
                     "variant": v, "fwd_ms": 1e3 * common.median(fwd[v]) if v in fwd else None,
                     "fwdbwd_ms": 1e3 * common.median(fb[v]),
                     "peak_mib": common.mib((mem or {}).get(v)),
                     "max_abs_diff": diffs.get(v), "repeats": repeats})
    if case.instantiation == "concatenation" and "literal" not in names:
        rows.append({**asdict(case), "case": case.label, "C": case.shape[1], "N": n, "M": m,
                     "variant": "literal", "note": f"skipped: needs ~{literal_bytes(case) / 2**30:.0f}"
                     f" GiB > {literal_limit / 2**30:.0f} GiB limit"})
    return rows


def run_training(repeats: int, size: int) -> list[dict]:
    steps = {"block": make_training_step(True, size), "reference": make_training_step(False, size)}
    if any(s is None for s in steps.values()):
        return []
    times = common.interleaved(steps, repeats)
    del steps
    gc.collect()
    mem = common.measure_in_subprocess(
        Path(__file__), {"train": {"block": True, "reference": False}, "size": size}) or {}
    return [{"case": f"train step NL C2D R50 5-block 8×{size}² B={BATCH}", "stage": "model",
             "frames": 8, "instantiation": "embedded_gaussian", "subsample": True,
             "variant": v, "fwdbwd_ms": 1e3 * common.median(times[v]),
             "peak_mib": common.mib(mem.get(v)), "repeats": repeats}
            for v in ("block", "reference")]


def _ratio(df: pd.DataFrame, col: str, a: str = "block", b: str = "reference") -> pd.Series:
    wide = df.pivot_table(index="case", columns="variant", values=col, sort=False)
    if a not in wide or b not in wide:
        return pd.Series(dtype=float)
    return (wide[a] / wide[b]).replace([float("inf"), -float("inf")], float("nan"))


def _kernel_ratio(df: pd.DataFrame) -> pd.Series:
    """(block − floor) / (reference − floor): the aggregation alone, convs subtracted."""
    wide = df.pivot_table(index="case", columns="variant", values="fwdbwd_ms", sort=False)
    if not {"block", "reference", "floor"} <= set(wide):
        return pd.Series(dtype=float)
    num, den = wide["block"] - wide["floor"], wide["reference"] - wide["floor"]
    # Undefined where the aggregation is within the noise of the floor.
    return (num / den).where((num >= 0) & (den > 0))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _literal_cell(ops: pd.DataFrame, case: str) -> str:
    lit = ops[(ops.case == case) & (ops.variant == "literal")]
    if not len(lit):
        return ""
    r = lit.iloc[0]
    if pd.isna(r.get("fwdbwd_ms")):
        return str(r.get("note", "skipped"))
    return f"{r.fwdbwd_ms:.0f} ms, {_fmt(r.peak_mib, 0)} MiB"


def case_table(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per case: block vs reference (and the literal port for concatenation)."""
    rows = []
    for case in ops.case.unique():
        one = ops[ops.case == case]
        get = lambda v, col: (one[one.variant == v][col].iloc[0]  # noqa: E731
                              if (one.variant == v).any() and col in one else None)
        r = lambda col: _ratio(one, col).iloc[0] if len(_ratio(one, col)) else None  # noqa: E731
        k = _kernel_ratio(one).dropna()
        rows.append({
            "case": case, "N×M": f"{int(one.N.iloc[0])}×{int(one.M.iloc[0])}",
            "block fwd ms": _fmt(get("block", "fwd_ms"), 1),
            "ref fwd ms": _fmt(get("reference", "fwd_ms"), 1),
            "fwd ratio": _fmt(r("fwd_ms")),
            "block f+b ms": _fmt(get("block", "fwdbwd_ms"), 1),
            "ref f+b ms": _fmt(get("reference", "fwdbwd_ms"), 1),
            "f+b ratio": _fmt(r("fwdbwd_ms")),
            "kernel f+b ratio": _fmt(k.iloc[0] if len(k) else None),
            "block MiB": _fmt(get("block", "peak_mib"), 1),
            "ref MiB": _fmt(get("reference", "peak_mib"), 1),
            "mem ratio": _fmt(r("peak_mib")),
            "literal concat port f+b": _literal_cell(ops, case),
        })
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame, mode: str, seconds: float) -> list[str]:
    ops = df[(df.stage != "model") & ~df.case.str.startswith("kernel ")]
    md = [f"# Non-local block on CPU ({common.machine()}; mode {mode})", "",
          f"Cases ({mode}): {describe(mode)}", "",
          f"Batch {BATCH}, float32, {common.THREADS} threads.  Times: median of "
          f"{int(df.repeats.max())} runs after a warm-up, block, reference (and floor) "
          "interleaved in the same run.  MiB: peak-RSS rise of one forward+backward above the "
          "post-setup baseline, in a fresh process per case (after a warm-up call).  "
          "ratio = block / reference (lower is better); kernel ratio = (block − floor) / "
          "(reference − floor), where *floor* is the same block without its aggregation "
          "(convs, pool, W_z, BN only; `reference_nonlocal.ConvFloor`), i.e. the cost of "
          "y = (f / C(x)) g alone (noisy where the aggregation is a small part).  The literal "
          "concatenation port (mmcv-style (2·C/2, N, M) tensor) is timed for forward+backward "
          "only, and skipped where its estimated peak exceeds the limit.  "
          f"Load average at the end: {common.load()}; {seconds / 60:.1f} min in all.",
          "", case_table(ops).to_markdown(index=False), ""]
    md += _targets(ops)
    md += _literal(ops)
    kern = df[df.case.str.startswith("kernel ")]
    if len(kern):
        wide = kern.pivot_table(index="case", columns="variant", values="fwdbwd_ms", sort=False)
        md += ["", "## Gaussian: unequal head dims (q, k: C; v: C/2), forward+backward ms", "",
               "CPU SDPA only fuses equal head dims.  `chunked`: query chunks with a "
               "hand-written backward (the block's kernel); `padded_sdpa`: v zero-padded to C "
               "so fused SDPA applies; `materialised`: softmax(qkᵀ)v with autograd.", "",
               wide.round(1).to_markdown(), ""]
    train = df[df.stage == "model"]
    if len(train) == 2:
        b, r = (train[train.variant == v].iloc[0] for v in ("block", "reference"))
        size_note = ("" if "224" in b.case else
                     "  (Smaller crop than the issue's 8×224² to fit this mode's budget.)")
        md += ["", "## Whole training step", "",
               f"{b.case} (SGD, momentum; median of {int(b.repeats)} steps after a warm-up, "
               f"interleaved): fast kernels {b.fwdbwd_ms / 1e3:.2f} s, "
               f"{_fmt(b.peak_mib, 0)} MiB; `fast=False` on every block "
               f"{r.fwdbwd_ms / 1e3:.2f} s, {_fmt(r.peak_mib, 0)} MiB "
               f"(ratio {b.fwdbwd_ms / r.fwdbwd_ms:.2f}× time, "
               f"{_fmt(b.peak_mib / r.peak_mib)}× memory).  At 8 frames res3/res4 see a "
               "single frame after the temporal pools (res3 28², res4 14² positions at 224²), "
               f"so the blocks are a small part of the step.{size_note}"]
    worst = ops.max_abs_diff.max()
    md += ["", f"Largest |block − reference| (and literal) over all outputs (float32): "
           f"{worst:.2e}."]
    return md


def _targets(ops: pd.DataFrame) -> list[str]:
    """The issue's targets, each with the measured value and met / not met."""
    header = ["## Targets", "",
              f"Judged at {TARGET_SHAPE[0]} {TARGET_SHAPE[1]}×28² without subsampling, the "
              "shape the issue's prototypes were measured at (other cases: the table above).", ""]
    lines = list(header)
    f = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    judged = ops[(ops.stage == TARGET_SHAPE[0]) & (ops.frames == TARGET_SHAPE[1])
                 & ~ops.subsample]
    soft = judged[judged.instantiation.isin(["gaussian", "embedded_gaussian"])]
    for case in soft.case.unique():
        one = judged[judged.case == case]
        mem = _ratio(one, "peak_mib").iloc[0]
        t = _ratio(one, "fwdbwd_ms").iloc[0]
        tf = _ratio(one, "fwd_ms").iloc[0]
        mem_ok = "n/a (memory not measured)" if pd.isna(mem) else f(mem <= 0.3)
        lines.append(f"- softmax, {case}: memory {mem:.2f}× (target ≤ 0.3: {mem_ok}); "
                     f"time f+b {t:.2f}×, fwd {tf:.2f}× (target ≤ 1.0: {f(max(t, tf) <= 1.0)})")
    dot = judged[judged.instantiation == "dot_product"]
    for case in dot.case.unique():
        one = judged[judged.case == case]
        t, k = _ratio(one, "fwdbwd_ms").iloc[0], _kernel_ratio(one).dropna()
        kern = f"; kernel alone {k.iloc[0]:.3f}×" if len(k) else ""
        lines.append(f"- dot product, {case}: block f+b {t:.3f}× (target ≤ 0.2: {f(t <= 0.2)})"
                     f"{kern}")
    cat = judged[judged.instantiation == "concatenation"]
    for case in cat.case.unique():
        one = judged[judged.case == case]
        t, k = _ratio(one, "fwdbwd_ms").iloc[0], _kernel_ratio(one).dropna()
        mem = _ratio(one, "peak_mib").iloc[0]
        kern = (f", kernel alone {k.iloc[0]:.3f}× ({f(k.iloc[0] <= 0.2)} for the kernel)"
                if len(k) else "")
        lines.append(f"- concatenation, {case}: block f+b {t:.3f}× the split-weight N×M form "
                     f"(target ≤ 0.2: {f(t <= 0.2)}){kern}; memory {mem:.2f}×")
    if len(lines) == len(header):
        lines.append("- (no target case in this mode)")
    growth = _t_growth(ops)
    if growth:
        lines += ["", "## T doubled (forward+backward growth)", ""] + growth
    return lines


def _literal(ops: pd.DataFrame) -> list[str]:
    """The literal repeat-and-concatenate port beside the block, where it ran or why not."""
    lit = ops[ops.variant == "literal"]
    if not len(lit):
        return []
    lines = ["", "## Concatenation: literal port (N×M×C tensor, mmcv-style)", ""]
    for _, r in lit.iterrows():
        if pd.isna(r.get("fwdbwd_ms")):
            lines.append(f"- {r.case}: literal port {r.note}")
            continue
        blk = ops[(ops.case == r.case) & (ops.variant == "block")].iloc[0]
        ref = ops[(ops.case == r.case) & (ops.variant == "reference")].iloc[0]
        lines.append(f"- {r.case}: literal f+b {r.fwdbwd_ms:.0f} ms, {_fmt(r.peak_mib, 0)} MiB; "
                     f"split-weight N×M form {ref.fwdbwd_ms:.0f} ms, {_fmt(ref.peak_mib, 0)} "
                     f"MiB; block {blk.fwdbwd_ms:.0f} ms, {_fmt(blk.peak_mib, 0)} MiB "
                     f"(block / literal: {blk.fwdbwd_ms / r.fwdbwd_ms:.3f}× time, "
                     f"{_fmt(blk.peak_mib / r.peak_mib, 3)}× memory)")
    return lines


def _t_growth(ops: pd.DataFrame) -> list[str]:
    """Forward+backward time growth when T doubles, for every case measured at both T."""
    lines = []
    two = ops[ops.variant.isin(["block", "reference"])]
    for (stage, inst, sub), g in two.groupby(["stage", "instantiation", "subsample"], sort=False):
        by_t = g.pivot_table(index="frames", columns="variant", values="fwdbwd_ms")
        if len(by_t) < 2 or not {"block", "reference"} <= set(by_t):
            continue
        lo, hi = by_t.index[0], by_t.index[-1]
        gr = by_t.loc[hi] / by_t.loc[lo]
        lines.append(f"- {inst} {stage} {'sub' if sub else 'nosub'}, T {lo}→{hi}: block "
                     f"{by_t.loc[lo, 'block']:.0f}→{by_t.loc[hi, 'block']:.0f} ms "
                     f"(×{gr['block']:.2f}), reference {by_t.loc[lo, 'reference']:.0f}→"
                     f"{by_t.loc[hi, 'reference']:.0f} ms (×{gr['reference']:.2f}); linear "
                     f"= ×{hi / lo:.0f}, quadratic = ×{(hi / lo) ** 2:.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", help=argparse.SUPPRESS)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode")
    g.add_argument("--full", action="store_const", const="full", dest="mode")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--literal-limit-gb", type=float, default=4.0,
                   help="skip the literal concatenation port above this estimated peak")
    p.add_argument("--no-train", action="store_true", help="skip the training-step case")
    args = p.parse_args(argv)
    if args.memory:
        print(json.dumps(memory_child(json.loads(args.memory))))
        return 0
    if args.repeats < 5:
        p.error(f"--repeats {args.repeats}: at least 5 runs per median")
    mode = common.bench_mode(args.mode)
    common.set_threads()
    t0 = time.perf_counter()
    rows = []
    todo = cases(mode)
    for i, case in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {case.label} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows += run_case(case, args.repeats, args.literal_limit_gb * 2**30, mode)
    print(f"gaussian kernels ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows += gaussian_kernels(args.repeats, KERNEL_STAGES[mode])
    if not args.no_train:
        print(f"training step NL C2D R50 ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows += run_training(args.repeats, TRAIN_SIZE[mode])
    df = pd.DataFrame(rows)
    md = summarise(df, mode, time.perf_counter() - t0)
    path = common.write_results(NAME, df, md)
    print("\n".join(md))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
