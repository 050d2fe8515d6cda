"""The judge leaderboard: every ``judges/*/result.json`` of a benchmark -> CSV, Markdown, PNG.

Rebuilt after each judge finishes, so after the last job of a multirun it covers all of them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

COLUMNS = (("judge", "judge"), ("gold_agreement", "gold agreement %"), ("self_consistency", "self-consistency %"),
           ("first_share", "first-position share %"), ("position_bias", "position bias (est.) %"),
           ("flip_rate", "flip rate (est.) %"), ("tie_rate", "tie %"), ("invalid_rate", "invalid %"),
           ("unparseable_rate", "unparseable %"), ("failed_rate", "failed %"), ("tokens_per_label", "tokens / label"),
           ("dollars_per_1k", "US$ / 1k labels"), ("seconds_per_1k", "s / 1k labels"),
           ("latency_p50", "p50 latency s"), ("latency_p95", "p95 latency s"), ("labels_per_second", "labels / s"),
           ("answers", "answers"), ("stopped_by", "budget stop"), ("health", "health guard"))
PERCENT = {"gold_agreement", "self_consistency", "first_share", "position_bias", "flip_rate", "tie_rate",
           "invalid_rate", "unparseable_rate", "failed_rate"}


def collect(out: Path) -> list[dict]:
    """Every judge's result, and every member of a composite judge as its own row (``panel/member``,
    measured on the answers it gave the composite), best first."""
    rows = []
    for p in sorted((out / "judges").glob("*/result.json")):
        r = json.loads(p.read_text())
        rows.append(r)
        for m in r.get("members", []):
            role = "" if m["role"] == "member" else f" ({m['role']})"
            rows.append({**m, "judge": f"{r['judge']}/{m['judge']}{role}", "member_of": r["judge"],
                         "pairs": r["pairs"], "pairs_source": r["pairs_source"], "gold": r.get("gold"),
                         "stopped_by": r.get("stopped_by"), "ledger": r.get("ledger")})
    key = "gold_agreement" if any("gold_agreement" in r for r in rows) else "self_consistency"
    return sorted(rows, key=lambda r: -(r.get(key) if r.get(key) is not None else -1.0))


def _fmt(k: str, v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if k in PERCENT:
        return f"{100 * v:.1f}"
    if isinstance(v, float):
        return f"{v:.4g}" if k != "dollars_per_1k" else f"{v:.4f}"
    return str(v)


def write(out: Path) -> list[dict]:
    rows = collect(out)
    if not rows:
        return rows
    with open(out / "leaderboard.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([k for k, _ in COLUMNS] + ["gold_agreement_lo", "gold_agreement_hi", "dollars", "tokens",
                                              "labels_paid", "pairs", "ledger"])
        for r in rows:
            ci = r.get("gold_agreement_ci") or [None, None]
            w.writerow([r.get(k) for k, _ in COLUMNS] + ci + [r.get("dollars"), r.get("tokens"),
                                                            r.get("labels_paid"), r.get("pairs"), r.get("ledger")])
    first = rows[0]
    md = ["# Judge leaderboard", "",
          f"{first['pairs']} pairs (`pairs={first['pairs_source']}`), each asked in both orders; gold: "
          f"**{first.get('gold') or 'none'}**. Sorted by gold agreement (self-consistency without a gold).", "",
          "| " + " | ".join(t for _, t in COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for r in rows:
        cells = []
        for k, _ in COLUMNS:
            c = _fmt(k, r.get(k))
            if k == "gold_agreement" and r.get("gold_agreement_ci"):
                lo, hi = r["gold_agreement_ci"]
                c += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
            cells.append(c)
        md.append("| " + " | ".join(cells) + " |")
    md += ["", "Gold agreement: share of answers matching the gold's preference where the gold is decisive "
               "(ties half) [95% bootstrap over answers]. Self-consistency: both orders give the same verdict. "
               "Position bias (est.) = 2 × first-position share − 1. Flip rate (est.): gold disagreement net of "
               "position bias, 1 − (agreement − bias/2)/(1 − bias) -- exact for a judge that answers 'first' with "
               "probability bias and otherwise flips the gold's answer at that rate. Costs come from each judge's "
               "ledger (`judges/<judge>/ledger.sqlite`); seconds are wall clock at the judge's concurrency. A row "
               "`panel/member` is one member of a panel or cascade, measured on the answers it gave there (its cost "
               "from its own ledger rows; a cascade's expensive judge answered only the escalated requests). "
               "Health guard: "
               "what `rlaif run`'s judge health guard (`judge_health.*`) would say of these answers: over half "
               "invalid, or a first-position share outside [10%, 90%], stops a run.", "",
           "![quality vs cost](quality_vs_cost.png)", ""]
    (out / "leaderboard.md").write_text("\n".join(md))
    _plot(rows, out / "quality_vs_cost.png")
    return rows


def _points(rows: list[dict], xkey: str, qkey: str) -> list[tuple[dict, float, float]]:
    return [(r, float(r[xkey]), float(r[qkey])) for r in rows
            if r.get(xkey) is not None and r.get(qkey) is not None and math.isfinite(r[xkey])]


def quality_vs_cost_figure(rows: list[dict]):
    """The leaderboard's figure (a matplotlib Figure): quality against cost per 1,000 labels on a log axis
    (symlog when a free judge sits at 0 among paid ones), each judge's name inside the frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qkey = "gold_agreement" if any("gold_agreement" in r for r in rows) else "self_consistency"
    paid = any((r.get("dollars_per_1k") or 0) > 0 for r in rows)
    xkey = "dollars_per_1k" if paid else "seconds_per_1k"
    pts = _points(rows, xkey, qkey)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    positive = [x for _, x, _ in pts if x > 0]
    if positive and len(positive) < len(pts):
        ax.set_xscale("symlog", linthresh=min(positive))
    elif positive:
        ax.set_xscale("log")
    for r, x, y in pts:
        ax.scatter([x], [100 * y], s=40)
        if qkey == "gold_agreement" and r.get("gold_agreement_ci"):
            lo, hi = r["gold_agreement_ci"]
            ax.errorbar([x], [100 * y], yerr=[[100 * (y - lo)], [100 * (hi - y)]], fmt="none", capsize=3)
    ax.margins(x=0.12, y=0.12)
    fig.canvas.draw()  # the limits, with the margins, before the labels are placed inside them
    to_axes = ax.transAxes.inverted()
    for r, x, y in pts:
        fx, fy = to_axes.transform(ax.transData.transform((x, 100 * y)))
        right, top = fx > 0.5, fy > 0.8  # a label on the side of the point that faces the frame's middle
        ax.annotate(r["judge"], (x, 100 * y), fontsize=8, xytext=(-5 if right else 5, -5 if top else 5),
                    textcoords="offset points", ha="right" if right else "left", va="top" if top else "bottom")
    ax.set_xlabel(("US$ per 1,000 labels" if paid else "seconds per 1,000 labels (all judges free)") + ", log scale")
    ax.set_ylabel(("gold agreement" if qkey == "gold_agreement" else "self-consistency") + " %")
    ax.set_title("judge quality vs cost")
    fig.tight_layout()
    return fig


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = quality_vs_cost_figure(rows)
    fig.savefig(path, dpi=110)
    plt.close(fig)
