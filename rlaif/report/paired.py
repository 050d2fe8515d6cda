"""Each arm against the reference arm, paired by seed: at the end point and over the whole curve.

Runs with the same seed share the evaluation prompts and the reference's completions, so the
difference arm - reference *within a seed* cancels that seed's luck. Two measures per seed:

* ``final``: the win-rate at the last evaluated label count both runs reached;
* ``auc``: the area under the learning curve, normalised to a mean win-rate over the label range
  both runs cover (trapezoids between evaluated rounds) -- what a label budget buys on average,
  not only at its end.

Mean difference over seeds with a 95% Student-t interval. An interval that contains 0 is a null
result at this many seeds and is reported as "not distinguishable", whatever the sign of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlaif.report.intervals import t_interval
from rlaif.report.runs import Run

MEASURES = {"final": "end point", "auc": "whole curve (area under the learning curve)"}


def area(xs: list[float], ys: list[float], lo: float, hi: float) -> float:
    """Mean of the piecewise-linear curve over [lo, hi] (its value there when lo == hi)."""
    if hi <= lo:
        return float(np.interp(lo, xs, ys))
    grid = sorted({lo, hi, *[x for x in xs if lo < x < hi]})
    vals = np.interp(grid, xs, ys)
    return float(np.sum((vals[1:] + vals[:-1]) / 2 * np.diff(grid)) / (hi - lo))


def per_seed(arm: Run, ref: Run, metric: str) -> dict[str, float] | None:
    """``final`` and ``auc`` differences (arm - reference) for one seed; None without overlap."""
    ax, ay = arm.series(metric)
    rx, ry = ref.series(metric)
    if not ax or not rx:
        return None
    lo, hi = max(ax[0], rx[0]), min(ax[-1], rx[-1])
    if hi < lo:
        return None
    return {"final": float(np.interp(hi, ax, ay) - np.interp(hi, rx, ry)),
            "auc": area(ax, ay, lo, hi) - area(rx, ry, lo, hi)}


@dataclass
class PairedDiff:
    arm: str
    measure: str  # "final" | "auc"
    seeds: list[int]
    per_seed: list[float] = field(repr=False)
    mean: float
    lo: float
    hi: float

    @property
    def verdict(self) -> str:
        if len(self.seeds) < 2 or not np.isfinite(self.lo):
            return "one seed: no interval"
        if self.lo > 0:
            return "better than the reference"
        if self.hi < 0:
            return "worse than the reference"
        return "not distinguishable"


def paired_differences(runs: list[Run], reference: str, metric: str) -> list[PairedDiff]:
    ref = {r.seed: r for r in runs if r.arm == reference}
    out = []
    for arm in sorted({r.arm for r in runs} - {reference}):
        diffs = {}
        for r in runs:
            if r.arm == arm and r.seed in ref and (d := per_seed(r, ref[r.seed], metric)) is not None:
                diffs[r.seed] = d
        if not diffs:
            continue
        seeds = sorted(diffs)
        for measure in MEASURES:
            vals = [diffs[s][measure] for s in seeds]
            m, lo, hi = t_interval(vals)
            out.append(PairedDiff(arm, measure, seeds, vals, m, lo, hi))
    return out


def paired_section(diffs: list[PairedDiff], reference: str, metric: str) -> list[str]:
    name = metric.replace("_", " ")
    lines = [f"## Each arm vs {reference}, paired by seed", "",
             f"Difference in {name} (percentage points, arm − {reference}) between runs of the same seed (same "
             f"evaluation prompts and reference completions). *End point*: at the last label count both reached. "
             f"*Whole curve*: the mean {name} over the label range both cover (area under the learning curve). "
             f"Mean over seeds [95% Student-t interval].", "",
             "| arm | seeds | end point Δ pp [95% CI] | verdict | whole curve Δ pp [95% CI] | verdict | per seed (end) |",
             "|---|---|---|---|---|---|---|"]
    by = {(d.arm, d.measure): d for d in diffs}
    for arm in sorted({d.arm for d in diffs}):
        f, a = by[(arm, "final")], by[(arm, "auc")]

        def cell(d: PairedDiff) -> str:
            s = f"{100 * d.mean:+.1f}"
            return s + (f" [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]" if np.isfinite(d.lo) else "")

        lines.append(f"| {arm} | {len(f.seeds)} | {cell(f)} | {f.verdict} | {cell(a)} | {a.verdict} | "
                     + ", ".join(f"{100 * v:+.1f}" for v in f.per_seed) + " |")
    lines += ["", "\"Not distinguishable\" means the interval contains 0: at this many seeds the runs cannot tell the "
                  f"arm from {reference} (a null result, not evidence of equality).", ""]
    return lines
