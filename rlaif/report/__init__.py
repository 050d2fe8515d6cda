"""``rlaif report RUN_DIR...``: does active selection pay? Curves, spend, acquired data, label efficiency.

    rlaif report multirun/2026-11-26/09-13-00            # a multirun directory
    rlaif report outputs/a outputs/b --out my-report      # or any run directories

Writes into ``--out`` (default: ``<first path>/report``): ``report.md``, ``learning_curves.png``,
``spend_curves.png`` (not with a free judge and arms of equal compute: it would repeat the learning
curves), ``acquired_data.png`` (what the arms measured), ``dpo_metrics.png`` (the DPO loss, reward
accuracy, margin and KL to the reference each round, as recorded), ``curves.csv`` (mean and 95% interval per arm and label
count), ``efficiency.csv``, ``paired.csv`` (each arm minus the reference arm per seed, at the end
point and over the whole curve) and ``runs.csv``. Every figure comes with its seeds and interval.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import asdict
from pathlib import Path

from rlaif.report.runs import ReportError, Run, load_runs

__all__ = ["ReportError", "build_report", "main"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))  # runs of different arms measure different things
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def build_report(paths: list[str | Path], out: str | Path | None = None, reference: str = "random",
                 n_boot: int = 2000, seed: int = 0) -> dict:
    """Write the report; returns what it computed (``runs``, ``points``, ``efficiency``, ``figures``, ``out``)."""
    from rlaif.report.characteristics import by_arm
    from rlaif.report.curves import aggregate
    from rlaif.report.markdown import render
    from rlaif.report.paired import paired_differences, paired_section

    runs: list[Run] = load_runs(paths)
    out = Path(out) if out else Path(paths[0]).expanduser() / "report"
    out.mkdir(parents=True, exist_ok=True)
    points = {m: aggregate(runs, m) for m in ("gold_winrate", "oracle_winrate", "gold_reward")}
    eff_metric = "gold_winrate" if points["gold_winrate"] else "oracle_winrate"
    effs = _label_efficiency(runs, eff_metric, reference, n_boot, seed)
    notes = _notes(runs, points, effs, eff_metric, reference)
    diffs = paired_differences(runs, reference, eff_metric) if reference in {r.arm for r in runs} else []
    figs = by_arm(runs)
    images, spend_key = _write_figures(runs, points, effs, out)
    _write_tables(runs, points, effs, diffs, eff_metric, out)
    md = render(runs, points, effs, figs, reference, eff_metric, n_boot, images, spend_key, notes,
                paired_section(diffs, reference, eff_metric) if diffs else [], out=out)
    (out / "report.md").write_text(md)
    return {"runs": runs, "points": points, "efficiency": effs, "figures": figs, "out": out,
            "metric": eff_metric, "paired": diffs}


def _label_efficiency(runs: list[Run], metric: str, reference: str, n_boot: int, seed: int):
    """Each arm's labels to reach the reference arm's final ``metric``; None without reference runs."""
    from rlaif.report.efficiency import label_efficiency

    curves = {}
    for r in runs:
        xs, ys = r.series(metric)
        if xs:
            curves.setdefault(r.arm, {})[r.seed] = (xs, ys)
    return label_efficiency(curves, reference, n_boot, seed) if reference in curves else None


def _notes(runs: list[Run], points: dict, effs, eff_metric: str, reference: str) -> list[str]:
    """The report's warnings: unfinished runs, no gold scorer, no reference runs, a reference at chance."""
    notes = []
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        notes += [f"> **Note:** {len(unfinished)} run(s) have not finished (no summary.json); their curves stop "
                  f"at their last evaluated round: " + ", ".join(f"{r.arm}/s{r.seed}" for r in unfinished), ""]
    if eff_metric != "gold_winrate":
        notes += ["> **Note:** no gold scorer in these runs: label efficiency uses the oracle's win-rate.", ""]
    if reference not in {r.arm for r in runs}:
        notes += [f"> **Note:** no {reference!r} runs: label efficiency needs the reference arm "
                  f"(pass --reference ARM to compare against another).", ""]
    if effs:
        ref_pts = [p for p in points[eff_metric] if p.arm == reference]
        last = max(ref_pts, key=lambda p: p.labels)
        if last.lo <= 0.5:
            notes += [f"> **Caution:** {reference}'s final {eff_metric.replace('_', ' ')} "
                      f"({100 * last.mean:.1f}%, 95% interval {100 * last.lo:.1f}-{100 * last.hi:.1f}) does not "
                      f"clear 50%: it has not beaten the reference, so the label-efficiency target is noise and the "
                      f"ratios below say nothing about the arms. Give the runs more labels (or seeds).", ""]
    return notes


def _write_figures(runs: list[Run], points: dict, effs, out: Path) -> tuple[dict[str, str | None], str]:
    """The PNGs; returns their file names (None for a figure that would say nothing: no file) and the spend
    unit the spend curves used."""
    from rlaif.report import plots

    images: dict[str, str | None] = {"learning": "learning_curves.png", "spend": "spend_curves.png",
                                     "characteristics": "acquired_data.png", "dpo": "dpo_metrics.png"}
    plots.learning_curves(points, out / images["learning"], effs[0].target if effs else None)
    spend, spend_key = plots.spend_curves(runs, out / images["spend"])
    images["spend"] = spend and spend.name
    images["characteristics"] = (c := plots.characteristics(runs, out / images["characteristics"])) and c.name
    images["dpo"] = (d := plots.dpo_metrics(runs, out / images["dpo"])) and d.name
    return images, spend_key


def _write_tables(runs: list[Run], points: dict, effs, diffs, eff_metric: str, out: Path) -> None:
    from rlaif.report.characteristics import run_figures

    _write_csv(out / "curves.csv", [asdict(p) for m in points.values() for p in m])
    _write_csv(out / "efficiency.csv", [{**asdict(e), "metric": eff_metric} for e in (effs or [])])
    _write_csv(out / "runs.csv", [{"arm": r.arm, "seed": r.seed, "path": str(r.path), **run_figures(r)} for r in runs])
    _write_csv(out / "paired.csv", [{"arm": d.arm, "measure": d.measure, "metric": eff_metric, "seeds": len(d.seeds),
                                     "mean": d.mean, "lo": d.lo, "hi": d.hi, "verdict": d.verdict,
                                     "per_seed": " ".join(f"{v:.4f}" for v in d.per_seed)} for d in diffs])


def _print_efficiency(effs, reference: str) -> None:
    if not effs:
        return
    print(f"label efficiency vs {reference} (target: its final win-rate {100 * effs[0].target:.1f}%):")
    for e in effs:
        if e.arm == reference:
            print(f"  {e.arm:<14} ratio 1.00 (reference), {e.seeds} seeds")
        elif e.ratio is None:
            print(f"  {e.arm:<14} never reached the target ({e.seeds} seeds)")
        else:
            hi = "inf" if not math.isfinite(e.hi) else f"{e.hi:.2f}"
            if math.isnan(e.lo):
                print(f"  {e.arm:<14} ratio {e.ratio:.2f}  no interval ({e.seeds} seed)")
                continue
            print(f"  {e.arm:<14} ratio {e.ratio:.2f}  95% CI [{e.lo:.2f}, {hi}]  ({e.seeds} seeds, "
                  f"{100 * e.never_share:.0f}% of resamples never reach it)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlaif report", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run directories or folders above them (a multirun directory)")
    ap.add_argument("--out", help="output directory (default: <first path>/report)")
    ap.add_argument("--reference", default="random", help="the arm label efficiency is measured against")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over seeds")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        res = build_report(args.paths, args.out, args.reference, args.bootstrap, args.seed)
    except ReportError as e:
        print(f"rlaif report: error: {e}", file=sys.stderr)
        return 2
    _print_efficiency(res["efficiency"], args.reference)
    print(f"report: {res['out'] / 'report.md'} ({len(res['runs'])} runs)")
    return 0
