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


def _spend_panels(runs: list[Run], spend_key: str) -> list[str]:
    """The spend figure's panels that say something the learning curves do not: the oracle's spend where it
    cost something (a free judge's "spend" is the label count: the learning curve again), and the arms'
    acquisition compute where it is not the same multiple of the labels for every run."""
    panels = [spend_key] if spend_key != "labels" else []
    ratios = {round(g / float(m["labels"]), 6) for r in runs for g, m in zip(r.cumulative("generations"), r.metrics)
              if float(m.get("labels") or 0) > 0}
    if len(ratios) > 1:
        panels.append("generations")
    return panels


def spend_curves(runs: list[Run], path: Path) -> tuple[Path | None, str]:
    """Gold win-rate vs the oracle's spend (dollars, else tokens) and vs acquisition generations; only the
    panels that are not the learning curve rescaled (:func:`_spend_panels`). None (no file) when none is."""
    arms = sorted({r.arm for r in runs})
    col = _colors(arms)
    spend_key = "dollars" if any(r.cumulative("dollars")[-1] > 0 for r in runs) else \
        "tokens" if any(r.cumulative("tokens")[-1] > 0 for r in runs) else "labels"
    metric = "gold_winrate" if any(r.series("gold_winrate")[0] for r in runs) else "oracle_winrate"
    panels = _spend_panels(runs, spend_key)
    if not panels:
        path.unlink(missing_ok=True)
        return None, spend_key
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for arm in arms:
            curves = []
            for r in (r for r in runs if r.arm == arm):
                pts = [(c, m[metric]) for c, m in zip(r.cumulative(key), r.metrics) if m.get(metric) is not None]
                if pts:
                    curves.append(([p[0] for p in pts], [p[1] for p in pts]))
                    ax.plot(*curves[-1], ".", color=col[arm], alpha=0.35)
            if curves:
                # seeds with identical budgets spend alike; the mean curve is a guide for the eye
                xs, ys = mean_curve(curves)
                ax.plot(xs, ys, "-", color=col[arm], label=arm)
        unit = {"dollars": "oracle spend (US$)", "tokens": "oracle tokens",
                "generations": "acquisition generations (compute)"}[key]
        ax.set_xlabel(unit)
        ax.set_ylabel(f"{metric.split('_')[0]} win-rate")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_title("win-rate vs acquisition compute" if key == "generations" else "win-rate vs what the oracle cost")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, spend_key


def characteristics(runs: list[Run], path: Path) -> Path | None:
    """The acquired data per round: entropy, certainty, oracle/implicit agreement (mean over seeds); one
    panel per characteristic some arm measured, no file when none did."""
    arms = sorted({r.arm for r in runs})
    col = _colors(arms)
    measured = [(key, title) for key, title in SELECTED
                if any(key in (m.get("selected") or {}) for r in runs for m in r.metrics)]
    if not measured:
        path.unlink(missing_ok=True)
        return None
    fig, axes = plt.subplots(1, len(measured), figsize=(5 * len(measured), 3.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], measured):
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
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# a round's DPO statistics (metrics.jsonl ``train``), as recorded; the first key of each present is drawn
DPO_METRICS = ((("loss",), "DPO loss"), (("reward_accuracy",), "reward accuracy"),
               (("reward_margin",), "reward margin"),
               (("kl", "kl_to_reference", "kl_ref", "kl_reference"), "KL to the reference"),
               (("ref_logratio",), "log pi/pi_ref, training pairs"))


def _dpo_series(run: Run, keys: tuple[str, ...]) -> list[tuple[int, float]]:
    out = []
    for i, m in enumerate(run.metrics):
        train = {**m, **(m.get("train") or {})}  # the evaluation's KL estimate sits beside the DPO stats
        value = next((train[k] for k in keys if isinstance(train.get(k), (int, float))), None)
        if value is not None and np.isfinite(value):
            out.append((int(m.get("round", i + 1)), float(value)))
    return out


def dpo_metrics(runs: list[Run], path: Path) -> Path | None:
    """The DPO learner per round (loss, reward accuracy, margin, KL to the reference: what the runs
    recorded), mean over each arm's seeds; no file when no run recorded any."""
    arms = sorted({r.arm for r in runs})
    col = _colors(arms)
    shown = [(keys, title) for keys, title in DPO_METRICS if any(_dpo_series(r, keys) for r in runs)]
    if not shown:
        path.unlink(missing_ok=True)
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.8), squeeze=False)
    for ax, (keys, title) in zip(axes[0], shown):
        for arm in arms:
            curves = [list(zip(*pts)) for r in runs if r.arm == arm and (pts := _dpo_series(r, keys))]
            if curves:
                xs, ys = mean_curve([(list(c[0]), list(c[1])) for c in curves])
                ax.plot(xs, ys, "o-", color=col[arm], label=f"{arm} (n={len(curves)})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
