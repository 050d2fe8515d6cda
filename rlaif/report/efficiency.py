"""Label efficiency: how many labels an arm needs to reach the reference arm's final win-rate.

target  = the reference arm's (random's) mean gold win-rate at its last label count;
L(arm)  = the first label count at which the arm's mean curve reaches the target, interpolated
          linearly between evaluated rounds (None: never reached within the labels it was given);
ratio   = L(arm) / L(reference): below 1, the arm needs fewer labels than random.

The interval is a bootstrap over seeds: resample each arm's seeds with replacement (jointly with
the reference's when both ran the same seeds, so seed-level luck cancels), recompute the mean
curves, the target and both crossings. A resample where the arm never reaches the target counts
as an infinite ratio; the share of such resamples is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlaif.report.curves import mean_curve

Curve = tuple[list[float], list[float]]  # (labels, win-rate), labels increasing


def labels_to_reach(labels, values, target: float) -> float | None:
    """First label count where the curve reaches ``target`` (linear interpolation), or None."""
    xs, ys = list(map(float, labels)), list(map(float, values))
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target - 1e-12:
            if i == 0:
                return x  # reached at the first evaluation: we cannot resolve below it
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (target - y0) / (y - y0) * (x - x0)
    return None


@dataclass
class Efficiency:
    arm: str
    seeds: int
    target: float
    labels_needed: float | None
    reference_labels: float | None
    ratio: float | None  # None: the arm's mean curve never reaches the target
    lo: float
    hi: float
    never_share: float  # share of bootstrap resamples in which the arm never reaches the target
    paired: bool
    first_point: bool  # reached already at the first evaluated label count (an upper bound)


def _ratio(arm_curves: list[Curve], ref_curves: list[Curve]) -> tuple[float | None, float, float | None, float | None]:
    rx, ry = mean_curve(ref_curves)
    target = ry[-1]
    l_ref = labels_to_reach(rx, ry, target)
    ax, ay = mean_curve(arm_curves)
    l_arm = labels_to_reach(ax, ay, target)
    ratio = None if l_arm is None or not l_ref else l_arm / l_ref
    return ratio, target, l_arm, l_ref


def label_efficiency(curves: dict[str, dict[int, Curve]], reference: str = "random", n_boot: int = 2000,
                     seed: int = 0) -> list[Efficiency]:
    """``curves[arm][seed] = (labels, win-rates)``; one row per arm (the reference first)."""
    if reference not in curves:
        raise ValueError(f"no runs of the reference arm {reference!r} (arms: {', '.join(sorted(curves))})")
    rng = np.random.default_rng(seed)
    ref_seeds = sorted(curves[reference])
    out = []
    for arm in [reference] + sorted(a for a in curves if a != reference):
        seeds = sorted(curves[arm])
        paired = seeds == ref_seeds
        ratio, target, l_arm, l_ref = _ratio([curves[arm][s] for s in seeds], [curves[reference][s] for s in ref_seeds])
        ax, _ = mean_curve([curves[arm][s] for s in seeds])
        boots = []
        if arm != reference and min(len(seeds), len(ref_seeds)) > 1:  # one seed: nothing to resample
            for _ in range(n_boot):
                i = rng.integers(0, len(seeds), len(seeds))
                j = i if paired else rng.integers(0, len(ref_seeds), len(ref_seeds))
                r, *_ = _ratio([curves[arm][seeds[k]] for k in i], [curves[reference][ref_seeds[k]] for k in j])
                boots.append(math.inf if r is None else r)
        if boots:
            b = np.asarray(boots)
            lo, hi = (float(np.quantile(b, 0.025, method="inverted_cdf")), float(np.quantile(b, 0.975, method="inverted_cdf")))
            never = float(np.mean(np.isinf(b)))
        else:
            lo = hi = 1.0 if arm == reference else float("nan")
            never = 0.0
        out.append(Efficiency(arm, len(seeds), target, l_arm, l_ref, ratio, lo, hi, never, paired,
                              l_arm is not None and bool(ax) and l_arm == ax[0]))
    return out
