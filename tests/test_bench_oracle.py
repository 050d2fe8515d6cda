"""`rlaif bench-oracle` on simulated judges with known flaws (no model: IMDB review pairs, keyword judge)."""

import csv
import json

import pytest

from rlaif.bench_oracle import _needs_multirun
from rlaif.labels.ledger import Ledger

from helpers import rlaif

KEYWORD_GOLD = "gold={_target_:rlaif.oracle.simulated.KeywordJudge}"  # the simulated judge's own base: noise-free


def bench(*args):
    return rlaif("bench-oracle", *args, full_error=True)


def result(out, judge):
    return json.loads((out / "judges" / judge / "result.json").read_text())


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """Two simulated judges of known flip rate / position bias, one priced, benchmarked in one command."""
    out = tmp_path_factory.mktemp("bench")
    r = bench("oracle=simulated", "oracle.flip_rate=0.2,0.0", "oracle.position_bias=0.25", "oracle.price_per_label=0.002",
              "n_pairs=500", KEYWORD_GOLD, f"out={out}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_recovers_flip_rate_and_position_bias(board):
    for flip in (0.2, 0.0):
        res = result(board, f"simulated_flip_rate={flip},position_bias=0.25,price_per_label=0.002")
        assert res["pairs"] == 500 and res["answers"] == 1000
        assert res["position_bias"] == pytest.approx(0.25, abs=0.06)
        assert res["flip_rate"] == pytest.approx(flip, abs=0.06)
        assert res["first_share"] == pytest.approx(0.625, abs=0.03)
        assert res["invalid_rate"] == 0.0 and res["gold"] == "keyword"
        lo, hi = res["gold_agreement_ci"]
        assert lo <= res["gold_agreement"] <= hi
    noisy = result(board, "simulated_flip_rate=0.2,position_bias=0.25,price_per_label=0.002")
    clean = result(board, "simulated_flip_rate=0.0,position_bias=0.25,price_per_label=0.002")
    assert clean["gold_agreement"] > noisy["gold_agreement"]
    assert clean["self_consistency"] > noisy["self_consistency"]


def test_cost_matches_the_ledger_exactly(board):
    for d in sorted((board / "judges").iterdir()):
        res = json.loads((d / "result.json").read_text())
        led = Ledger(d / "ledger.sqlite", readonly=True)
        try:
            totals, rows = led.totals(), led.rows()
        finally:
            led.close()
        assert len(rows) == totals["paid"] == res["labels_paid"] == 1000  # both orders of 500 pairs, all bought
        assert res["dollars"] == totals["spent_dollars"]
        assert res["dollars"] == pytest.approx(0.002 * 1000)
        assert sum(r["cost"] for r in rows) == pytest.approx(res["dollars"], abs=1e-12)
        assert res["dollars_per_1k"] == pytest.approx(1000 * totals["spent_dollars"] / totals["paid"], rel=0, abs=1e-12)
        assert res["tokens_per_label"] == 0 and res["seconds_per_1k"] > 0 and res["labels_per_second"] > 0
        assert {r["swapped"] for r in rows} == {0}  # the benchmark sets the order itself: (a, b) and (b, a)
    # the leaderboard covers both judges, in CSV, Markdown and a plot
    rows = list(csv.DictReader(open(board / "leaderboard.csv")))
    assert len(rows) == 2 and float(rows[0]["gold_agreement"]) >= float(rows[1]["gold_agreement"])
    md = (board / "leaderboard.md").read_text()
    assert "| judge | gold agreement %" in md and "2.0000" in md  # US$ 2 per 1,000 labels
    assert (board / "quality_vs_cost.png").stat().st_size > 0
    assert len((board / "pairs.jsonl").read_text().splitlines()) == 501  # spec line + the shared pairs


def test_budget_stops_the_judge(tmp_path):
    # batch_size=1: the Labeler reserves a batch's worst case whole, and a 64-pair batch ($0.64) would not fit
    r = bench("oracle=simulated", "oracle.price_per_label=0.01", "oracle.batch_size=1", "n_pairs=50", "budget.dollars=0.3",
              f"out={tmp_path}", "gold=null")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next((tmp_path / "judges").glob("*/result.json")).read_text())
    assert res["stopped_by"] == "dollars" and res["labels_paid"] == 30 and res["dollars"] == pytest.approx(0.3)
    assert "gold_agreement" not in res and "budget stopped it" in r.stdout


def test_errors_and_sweep_detection(tmp_path):
    r = bench("pairs=/nonexistent/run", f"out={tmp_path}")
    assert r.returncode == 2 and "pairs='/nonexistent/run'" in r.stderr
    assert _needs_multirun(["oracle=simulated,reward_model"])
    assert _needs_multirun(["oracle.flip_rate=0.1,0.2"])
    assert not _needs_multirun(["oracle=simulated", "gold={_target_:a,model:b}", "hydra.run.dir=a,b"])
