"""What each arm bought and what it cost: acquired-data characteristics and per-run figures.

From each round's ``selected`` block in metrics.jsonl (weighted by the labels of the round):
mean prompt entropy, mean certainty |r_a - r_b| of the implicit rewards, and the share of decisive
labels where the oracle agreed with the policy's implicit preference (r_a > r_b). An arm that does
not score pairs (random) has no entropy or certainty: shown as n/a, never as 0. Plus, from the
summary: decisive/tie shares, generations and acquisition seconds per label, spend, wall time.
Each figure is averaged over the arm's seeds, with the Student-t interval across seeds.
"""

from __future__ import annotations

import numpy as np

from rlaif.report.intervals import t_interval
from rlaif.report.runs import Run

SELECTED = (("mean_entropy", "prompt entropy"), ("mean_certainty", "certainty |r_a - r_b|"),
            ("oracle_implicit_agreement", "oracle agrees with implicit preference"))


def run_figures(run: Run) -> dict[str, float]:
    """One value per figure for one run (absent when the run did not measure it)."""
    out: dict[str, float] = {}
    for key, _ in SELECTED:
        w = [(m["selected"][key], m.get("labels_round", 1)) for m in run.metrics
             if key in (m.get("selected") or {})]
        if w:
            vals, weights = zip(*w)
            out[key] = float(np.average(vals, weights=weights)) if sum(weights) else float(np.mean(vals))
    last = run.metrics[-1]
    labels = float(last.get("labels") or 0)
    if labels:
        out["decisive_share"] = float(last.get("decisive", 0)) / labels
        out["tie_share"] = sum(float(m.get("ties", 0)) for m in run.metrics) / labels
        out["invalid_share"] = sum(float(m.get("invalid", 0)) for m in run.metrics) / labels
    s = run.summary or {}
    for key in ("generations_per_label", "acquisition_seconds_per_label", "dollars_per_label", "wall_seconds"):
        if s.get(key) is not None:
            out[key] = float(s[key])
    spend = last.get("spend") or {}
    out["dollars"] = float(spend.get("dollars", 0) or 0)
    out["tokens"] = float(spend.get("tokens", 0) or 0)
    out["labels"] = labels
    for key in ("gold_winrate", "oracle_winrate"):
        if last.get(key) is not None:
            out[f"final_{key}"] = float(last[key])
    return out


def by_arm(runs: list[Run]) -> dict[str, dict[str, tuple[int, float, float, float]]]:
    """``{arm: {figure: (n_seeds, mean, lo, hi)}}``."""
    out: dict[str, dict] = {}
    for arm in sorted({r.arm for r in runs}):
        figs = [run_figures(r) for r in runs if r.arm == arm]
        keys = sorted({k for f in figs for k in f})
        out[arm] = {}
        for k in keys:
            vals = [f[k] for f in figs if k in f]
            m, lo, hi = t_interval(vals)
            if k.endswith(("_share", "_winrate", "_agreement")):  # shares: the interval stays within [0, 1]
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            out[arm][k] = (len(vals), m, lo, hi)
    return out
