"""`rlaif report` on real tiny-model runs (2 arms x 2 seeds), plus hand-made curves for the efficiency math."""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from rlaif.report import ReportError, build_report
from rlaif.report.efficiency import label_efficiency, labels_to_reach

import helpers
from helpers import tiny

T_975_DF1 = 12.706204736174707  # Student t, 97.5% quantile, 1 degree of freedom (two seeds)


def rlaif(*args):
    return helpers.rlaif(*args, timeout=900, full_error=True)


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """One real multirun: random and certainty (f=4), seeds 0 and 1, 16 labels in rounds of 8."""
    out = tmp_path_factory.mktemp("sweep") / "mr"
    run = tiny("generator=vllm", "task.train_prompts=40", "budget.labels=16", "budget.labels_per_round=8")
    r = rlaif("run", "-m", *run, "acquisition=random,certainty", "seed=0,1", f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    runs = sorted(p.parent for p in out.rglob("summary.json"))
    assert len(runs) == 4, runs
    return out


def metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_report_on_a_multirun(sweep, tmp_path):
    res = build_report([sweep], tmp_path / "rep", n_boot=300)
    out = res["out"]
    for f in ("report.md", "learning_curves.png", "spend_curves.png", "acquired_data.png", "curves.csv",
              "efficiency.csv", "paired.csv", "runs.csv"):
        assert (out / f).exists() and (out / f).stat().st_size > 0, f
    assert sorted({r.arm for r in res["runs"]}) == ["certainty", "random"]
    assert sorted(r.seed for r in res["runs"]) == [0, 0, 1, 1]

    # one interval by hand: random's gold win-rate at 16 labels, Student t over the two seeds
    vals = []
    for d in sorted(p.parent for p in sweep.rglob("summary.json")):
        if json.loads((d / "summary.json").read_text())["arm"] == "random":
            vals.append(next(m["gold_winrate"] for m in metrics(d) if m["labels"] == 16))
    mean = (vals[0] + vals[1]) / 2
    half = T_975_DF1 * abs(vals[0] - vals[1]) / math.sqrt(2) / math.sqrt(2)  # sd of two = |a-b|/sqrt(2)
    (p,) = [p for p in res["points"]["gold_winrate"] if p.arm == "random" and p.labels == 16]
    assert p.n == 2 and p.interval == "t over seeds"
    assert p.mean == pytest.approx(mean)
    assert p.lo == pytest.approx(max(0.0, mean - half)) and p.hi == pytest.approx(min(1.0, mean + half))

    # the CSV holds the same aggregated curves
    rows = list(csv.DictReader(open(out / "curves.csv")))
    row = next(r for r in rows if r["arm"] == "random" and r["metric"] == "gold_winrate" and float(r["labels"]) == 16)
    assert float(row["mean"]) == pytest.approx(mean) and int(row["n"]) == 2

    # label efficiency: random is the reference; the target is its final mean gold win-rate
    effs = res["efficiency"]
    assert [e.arm for e in effs] == ["random", "certainty"]
    assert effs[0].target == pytest.approx(mean)
    cert = effs[1]
    assert cert.paired and cert.seeds == 2
    if cert.ratio is not None:
        assert cert.lo <= cert.ratio <= cert.hi
    # acquired-data characteristics: certainty scores pairs, random does not (n/a, not 0)
    figs = res["figures"]
    assert "mean_certainty" in figs["certainty"] and "mean_certainty" not in figs["random"]
    md = (out / "report.md").read_text()
    for heading in ("## Label efficiency (vs random)", "## Learning curves", "## Spend", "## What each arm acquired",
                    "## Runs"):
        assert heading in md
    assert "certainty" in md and "(2 seeds: 0, 1)" in md and "{" not in md.split("## Runs")[0]


def test_report_cli_default_out_and_single_run(sweep, tmp_path):
    r = rlaif("report", str(sweep), "--bootstrap", "200")
    assert r.returncode == 0, r.stderr
    assert (sweep / "report" / "report.md").exists()
    assert "label efficiency vs random" in r.stdout and "certainty" in r.stdout
    # one seed: the run's own bootstrap interval from metrics.jsonl
    one = next(p.parent for p in sweep.rglob("summary.json") if "random" in p.parent.name)
    res = build_report([one], tmp_path / "one", n_boot=100)
    last = metrics(one)[-1]
    (p,) = [p for p in res["points"]["gold_winrate"] if p.labels == last["labels"]]
    assert p.interval == "run bootstrap" and p.n == 1
    assert [p.lo, p.hi] == pytest.approx(last["gold_winrate_ci"])
    # the report's own folder is never mistaken for a run when reporting again
    assert len(build_report([sweep], tmp_path / "again", n_boot=50)["runs"]) == 4


def test_report_errors(sweep, tmp_path):
    with pytest.raises(ReportError, match="no run directories"):
        build_report([tmp_path])
    r = rlaif("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file" in r.stderr
    # the same arm and seed twice
    dup = tmp_path / "dup"
    run = next(p.parent for p in sweep.rglob("summary.json"))
    shutil.copytree(run, dup, ignore=shutil.ignore_patterns("state", "model", "ledger.sqlite*"))
    with pytest.raises(ReportError, match="two runs of arm"):
        build_report([sweep, dup], tmp_path / "o1")
    # a run of another task
    cfg = json.loads((dup / "config.json").read_text())
    cfg["task"]["name"] = "tldr"
    (dup / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ReportError, match="mixed tasks"):
        build_report([sweep, dup], tmp_path / "o2")


def test_bench_oracle_on_the_pairs_of_a_run(sweep, tmp_path):
    """bench-oracle reads a run's ledger: its training pairs, asked in both orders."""
    run = next(p.parent for p in sweep.rglob("summary.json"))
    r = rlaif("bench-oracle", f"pairs={run}", "n_pairs=100", "oracle=simulated", f"out={tmp_path / 'b'}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(next((tmp_path / "b" / "judges").glob("*/result.json")).read_text())
    assert res["pairs"] == 16 and res["answers"] == 32 and "gold_agreement" in res


# -- the label-efficiency math on hand-made curves ---------------------------------------------
X = [10, 20, 30, 40]


def test_labels_to_reach_interpolates():
    assert labels_to_reach(X, [0.5, 0.7, 0.9, 0.9], 0.8) == pytest.approx(25.0)
    assert labels_to_reach(X, [0.5, 0.6, 0.7, 0.8], 0.8) == pytest.approx(40.0)
    assert labels_to_reach(X, [0.85, 0.9, 0.9, 0.9], 0.8) == 10.0  # reached at the first evaluation
    assert labels_to_reach(X, [0.5, 0.6, 0.7, 0.75], 0.8) is None


def test_label_efficiency_known_ratios():
    rnd = (X, [0.5, 0.6, 0.7, 0.8])
    curves = {"random": {0: rnd, 1: rnd, 2: rnd},
              "fast": {s: (X, [0.6, 0.8, 0.9, 0.9]) for s in range(3)},
              "mid": {s: (X, [0.5, 0.7, 0.9, 0.9]) for s in range(3)},
              "slow": {s: (X, [0.5, 0.55, 0.6, 0.7]) for s in range(3)}}
    effs = {e.arm: e for e in label_efficiency(curves, n_boot=200)}
    assert effs["random"].ratio == 1.0 and effs["random"].target == pytest.approx(0.8)
    assert effs["fast"].ratio == pytest.approx(0.5) and (effs["fast"].lo, effs["fast"].hi) == pytest.approx((0.5, 0.5))
    assert effs["mid"].ratio == pytest.approx(25 / 40)
    assert effs["slow"].ratio is None and effs["slow"].labels_needed is None and effs["slow"].never_share == 1.0


def test_label_efficiency_bootstrap_over_seeds():
    # random's seeds end at 0.7 and 0.9 (target 0.8, reached at 40); the arm's seeds reach it at 20 and 30
    curves = {"random": {0: (X, [0.5, 0.6, 0.65, 0.7]), 1: (X, [0.5, 0.6, 0.75, 0.9])},
              "arm": {0: (X, [0.6, 0.8, 0.85, 0.9]), 1: (X, [0.5, 0.7, 0.8, 0.9])}}
    (ref, arm) = label_efficiency(curves, n_boot=2000, seed=1)
    assert ref.target == pytest.approx(0.8) and ref.labels_needed == pytest.approx(40.0)
    # mean curve of the arm: 0.55, 0.75, 0.825, 0.9 -> reaches 0.8 at 20 + (0.05 / 0.075) * 10
    assert arm.labels_needed == pytest.approx(20 + 10 * 0.05 / 0.075)
    assert arm.ratio == pytest.approx(arm.labels_needed / 40.0)
    assert arm.paired and arm.lo <= arm.ratio <= arm.hi and arm.lo < arm.hi
    # paired resamples at the extremes: seeds (0, 0) -> target 0.7, random at 40, the arm at 15 -> 0.375;
    # seeds (1, 1) -> target 0.9, both at 40 -> 1.0; each has probability 1/4, so they are the 95% bounds
    assert (arm.lo, arm.hi) == pytest.approx((0.375, 1.0))


def test_runs_csv_has_every_arms_columns(sweep, tmp_path):
    out = build_report([sweep], tmp_path / "csv", n_boot=50)["out"]
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 4 and "mean_certainty" in rows[0]
    assert {r["mean_certainty"] for r in rows if r["arm"] == "random"} == {""}


def _run(arm, seed, points):
    from rlaif.report.runs import Run

    r = Run.__new__(Run)
    r.arm, r.seed = arm, seed
    r.metrics = [{"labels": x, "gold_winrate": y} for x, y in points]
    return r


def test_paired_differences_end_point_and_whole_curve_by_hand():
    from rlaif.report.paired import area, paired_differences

    assert area([32, 64, 96], [0.5, 0.7, 0.6], 32, 96) == pytest.approx(((0.5 + 0.7) / 2 + (0.7 + 0.6) / 2) / 2)
    runs = [_run("random", 0, [(32, 0.50), (64, 0.60), (96, 0.70)]), _run("random", 1, [(32, 0.52), (64, 0.58), (96, 0.66)]),
            _run("random", 2, [(32, 0.55), (64, 0.57), (96, 0.60)]),
            _run("certainty", 0, [(32, 0.50), (64, 0.70), (96, 0.72)]), _run("certainty", 1, [(32, 0.52), (64, 0.66), (96, 0.70)]),
            _run("certainty", 2, [(32, 0.55), (64, 0.67), (96, 0.58)])]
    d = {x.measure: x for x in paired_differences(runs, "random", "gold_winrate")}
    assert d["final"].per_seed == pytest.approx([0.02, 0.04, -0.02]) and d["final"].mean == pytest.approx(0.04 / 3)
    half = 4.302652729911275 * np.std([0.02, 0.04, -0.02], ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert (d["final"].lo, d["final"].hi) == pytest.approx((0.04 / 3 - half, 0.04 / 3 + half))
    assert d["final"].verdict == "not distinguishable"  # the interval contains 0
    # whole curve: seed 0 gains (0.1/2 + (0.1 + 0.02)/2) / 2 = 0.055 on average over 32-96 labels
    assert d["auc"].per_seed == pytest.approx([0.055, 0.05, 0.045])
    assert d["auc"].verdict == "better than the reference"
