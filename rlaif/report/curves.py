"""Learning curves across seeds: mean and 95% interval per arm at each label count.

With several seeds the interval is Student's t across seeds (each seed's win-rate is one
observation): mean +- t(0.975, n-1) * sd / sqrt(n) (:func:`~rlaif.report.intervals.t_interval`).
With one seed it is the run's own interval (a bootstrap over its evaluation prompts, from
metrics.jsonl). Seeds evaluated at different label counts are linearly interpolated onto the union
of the label counts, within each seed's range only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlaif.report.intervals import t_interval
from rlaif.report.runs import Run


@dataclass
class Point:
    arm: str
    metric: str
    labels: float
    n: int
    mean: float
    lo: float
    hi: float
    interval: str  # "t over seeds" | "run bootstrap" | "none"


def _interp(xs, ys, x):
    if not xs or x < xs[0] - 1e-9 or x > xs[-1] + 1e-9:
        return None
    return float(np.interp(x, xs, ys))


BOUNDED = ("gold_winrate", "oracle_winrate", "gold_reward")  # quantities within [0, 1]


def aggregate(runs: list[Run], metric: str) -> list[Point]:
    """One point per (arm, label count) for ``metric`` (gold_winrate, oracle_winrate, gold_reward).

    Intervals of quantities bounded in [0, 1] are clipped to it (a t interval over few seeds is not)."""
    out: list[Point] = []
    for arm in sorted({r.arm for r in runs}):
        arm_runs = [r for r in runs if r.arm == arm]
        series = [r.series(metric) for r in arm_runs]
        grid = sorted({x for xs, _ in series for x in xs})
        for x in grid:
            vals = [v for xs, ys in series if (v := _interp(xs, ys, x)) is not None]
            if not vals:
                continue
            if len(vals) >= 2:
                m, lo, hi = t_interval(vals)
                if metric in BOUNDED:
                    lo, hi = max(lo, 0.0), min(hi, 1.0)
                out.append(Point(arm, metric, x, len(vals), m, lo, hi, "t over seeds"))
                continue
            # one seed: its own interval, if this label count is one of its evaluated rounds
            (run,) = [r for r, (xs, _) in zip(arm_runs, series) if xs and xs[0] <= x <= xs[-1]]
            ci = next((m.get(f"{metric}_ci") for m in run.metrics if float(m["labels"]) == x and
                       m.get(f"{metric}_ci")), None)
            lo, hi = (ci if ci else (float("nan"), float("nan")))
            out.append(Point(arm, metric, x, 1, vals[0], float(lo), float(hi),
                             "run bootstrap" if ci else "none"))
    return out


def mean_curve(curves: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float]]:
    """Mean over seeds on the union of label counts (each seed interpolated within its range)."""
    grid = sorted({x for xs, _ in curves for x in xs})
    xs_out, ys_out = [], []
    for x in grid:
        vals = [v for xs, ys in curves if (v := _interp(xs, ys, x)) is not None]
        if vals:
            xs_out.append(x)
            ys_out.append(float(np.mean(vals)))
    return xs_out, ys_out
