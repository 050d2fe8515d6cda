"""95% confidence intervals, in one place: the run's evaluation, the oracle bench and the report
use them. Three methods, for three kinds of data:

* :func:`bootstrap_interval` -- percentile bootstrap of a mean, for per-prompt outcomes of one run
  (win-rates, where the outcomes are 0 / 0.5 / 1 and far from normal);
* :func:`normal_interval` -- mean +- 1.96 standard errors, for a run's mean gold reward;
* :func:`t_interval` -- Student's t across independent observations, one per seed (the report).

Each returns ``(mean, lo, hi)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def normal_interval(x: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean with a normal-approximation 95% interval (a single value: an interval of width 0)."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(a.mean())
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0
    return m, m - z * se, m + z * se


def bootstrap_interval(x: Sequence[float], n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean with the 2.5% / 97.5% percentiles of ``n`` bootstrap resamples' means (seeded)."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n, a.size))].mean(axis=1)
    return float(a.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def t_interval(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of independent observations (one per seed); none below two."""
    a = np.asarray(values, dtype=float)
    m = float(a.mean())
    if a.size < 2:
        return m, float("nan"), float("nan")
    half = t_quantile(a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return m, m - half, m + half
