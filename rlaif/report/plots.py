"""PNG figures for ``rlaif report`` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlaif.report.characteristics import SELECTED  # noqa: E402
from rlaif.report.curves import Point, mean_curve  # noqa: E402
from rlaif.report.runs import Run  # noqa: E402


def _colors(arms: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {a: cycle[i % len(cycle)] for i, a in enumerate(arms)}


def learning_curves(points: dict[str, list[Point]], path: Path, target: float | None = None) -> Path:
    """Win-rate vs labels per arm (mean, shaded 95% interval), one panel per metric."""
    metrics = [m for m in ("gold_winrate", "oracle_winrate") if points.get(m)]
    arms = sorted({p.arm for m in metrics for p in points[m]})
    col = _colors(arms)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for arm in arms:
            pts = [p for p in points[metric] if p.arm == arm]
            x = [p.labels for p in pts]
            ax.plot(x, [p.mean for p in pts], "o-", color=col[arm], label=f"{arm} (n={max(p.n for p in pts)})")
            lo, hi = np.array([p.lo for p in pts]), np.array([p.hi for p in pts])
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(np.array(x)[ok], lo[ok], hi[ok], color=col[arm], alpha=0.15)
        if metric == "gold_winrate" and target is not None:
            ax.axhline(target, color="grey", ls=":", lw=1, label="random's final")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_xlabel("labels")
        ax.set_ylabel(f"{metric.split('_')[0]} win-rate vs reference")
        ax.set_title(f"{metric.split('_')[0]} win-rate (mean, 95% interval)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spend_curves(runs: list[Run], path: Path) -> tuple[Path, str]:
    """Gold win-rate vs the oracle's spend (dollars, else tokens) and vs acquisition generations."""
    arms = sorted({r.arm for r in runs})
    col = _colors(arms)
    spend_key = "dollars" if any(r.cumulative("dollars")[-1] > 0 for r in runs) else \
        "tokens" if any(r.cumulative("tokens")[-1] > 0 for r in runs) else "labels"
    metric = "gold_winrate" if any(r.series("gold_winrate")[0] for r in runs) else "oracle_winrate"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, key in enumerate((spend_key, "generations")):
        ax = axes[i]
        for arm in arms:
            curves = []
            for r in (r for r in runs if r.arm == arm):
                cost = r.cumulative(key) if key != "labels" else [float(m["labels"]) for m in r.metrics]
                pts = [(c, m[metric]) for c, m in zip(cost, r.metrics) if m.get(metric) is not None]
                if pts:
                    curves.append(([p[0] for p in pts], [p[1] for p in pts]))
                    ax.plot(*curves[-1], ".", color=col[arm], alpha=0.35)
            if curves:
                # seeds with identical budgets spend alike; the mean curve is a guide for the eye
                xs, ys = mean_curve(curves)
                ax.plot(xs, ys, "-", color=col[arm], label=arm)
        unit = {"dollars": "oracle spend (US$)", "tokens": "oracle tokens",
                "labels": "labels (the oracle was free)", "generations": "acquisition generations (compute)"}[key]
        ax.set_xlabel(unit)
        ax.set_ylabel(f"{metric.split('_')[0]} win-rate")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.legend(fontsize=8)
    axes[0].set_title("win-rate vs what the oracle cost")
    axes[1].set_title("win-rate vs acquisition compute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, spend_key


def characteristics(runs: list[Run], path: Path) -> Path:
    """The acquired data per round: entropy, certainty, oracle/implicit agreement (mean over seeds)."""
    arms = sorted({r.arm for r in runs})
    col = _colors(arms)
    fig, axes = plt.subplots(1, len(SELECTED), figsize=(5 * len(SELECTED), 3.8))
    for ax, (key, title) in zip(axes, SELECTED):
        for arm in arms:
            curves = []
            for r in (r for r in runs if r.arm == arm):
                pts = [(float(m["labels"]), m["selected"][key]) for m in r.metrics if key in (m.get("selected") or {})]
                if pts:
                    curves.append(([p[0] for p in pts], [p[1] for p in pts]))
            if curves:
                ax.plot(*mean_curve(curves), "o-", color=col[arm], label=arm)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("labels")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured by these arms", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
