"""Budgets: reservations never let any concurrency overrun a limit; prices are required of paid judges."""

from __future__ import annotations

import pytest

from rlaif.labels.budget import WAIT, Budget, BudgetError, check_prices
from rlaif.labels.ledger import Ledger
from rlaif.labels.labeler import Labeler
from rlaif.types import Spend

from helpers import CostlyConfig, CostlyOracle, make_pairs


def test_budget_validation():
    with pytest.raises(BudgetError, match="at least one budget limit"):
        Budget()
    with pytest.raises(BudgetError, match="budget.dollars must be a positive number"):
        Budget(dollars=-1)
    b = Budget.from_config({"labels": 3, "labels_per_round": 2, "dollars": None})
    assert b.has == {"labels": True, "dollars": False, "tokens": False}


def test_reserve_waits_while_in_flight_then_stops():
    b = Budget(dollars=1.0)
    r1 = b.try_reserve(Spend(1, 0.6, 0))
    assert r1 is not None and r1 is not WAIT
    assert b.try_reserve(Spend(1, 0.6, 0)) is WAIT  # may fit once r1 settles
    b.settle(r1, Spend(1, 0.1, 0))
    r2 = b.try_reserve(Spend(1, 0.6, 0))
    assert r2 is not WAIT and r2 is not None
    b.settle(r2, Spend(1, 0.6, 0))
    assert b.try_reserve(Spend(1, 0.6, 0)) is None  # nothing in flight: it can never fit
    assert b.stopped_by == "dollars" and b.exhausted
    assert b.try_reserve(Spend(1, 0.0, 0), cached=True) is not None  # ledger hits are still free
    assert b.spent.dollars <= 1.0


@pytest.mark.parametrize("limit", ["dollars", "tokens"])
def test_64_way_concurrency_never_exceeds_tight_budget(open_labeler, limit):
    oracle = CostlyOracle(CostlyConfig(concurrency=64, batch_size=1, max_cost=0.01, max_tokens=500, seed=3))
    budget = Budget(dollars=0.5) if limit == "dollars" else Budget(tokens=20_000)
    labeler, ledger = open_labeler(oracle, budget)
    pairs = make_pairs(400)
    labels = labeler.label(pairs)
    got = [l for l in labels if l is not None]
    assert oracle.max_in_flight > 32  # real concurrency happened
    t = ledger.totals()
    if limit == "dollars":
        assert budget.spent.dollars <= 0.5 + 1e-12 and budget.peak.dollars <= 0.5 + 1e-12
        assert t["dollars"] <= 0.5 + 1e-12
        # far more labels than the worst case allows up front: settlement gave unused reservations back
        assert len(got) > 0.5 / 0.01
    else:
        assert budget.spent.tokens <= 20_000 and budget.peak.tokens <= 20_000
        assert t["tokens"] <= 20_000
    assert budget.stopped_by == limit
    assert budget.as_dict()["stopped_by"] == limit
    assert oracle.calls == len(got) == t["paid"] == ledger.totals()["rows"]
    assert len(got) < len(pairs)


def test_labels_limit_counts_cached_labels_and_stops(open_labeler):
    oracle = CostlyOracle(CostlyConfig(concurrency=16, max_cost=0.001))
    labeler, _ = open_labeler(oracle, Budget(labels=10))
    pairs = make_pairs(30)
    first = labeler.label(pairs[:8])
    assert all(first)
    labeler.budget = budget = Budget(labels=10)
    again = labeler.label(pairs[:12])  # 8 hits (free, but counted) + 2 bought + 2 refused
    assert sum(l is not None for l in again) == 10
    assert sum(1 for l in again if l is not None and l.cached) == 8
    assert budget.stopped_by == "labels" and budget.labels_left() == 0 and budget.exhausted
    assert oracle.calls == 10


def test_eval_labels_cost_dollars_not_labels(open_labeler):
    oracle = CostlyOracle(CostlyConfig(concurrency=4, max_cost=0.01))
    budget = Budget(labels=5, dollars=1.0)
    labeler, _ = open_labeler(oracle, budget)
    assert all(labeler.label(make_pairs(8, "e"), purpose="eval"))
    assert budget.spent.labels == 0 and budget.spent.dollars > 0
    assert sum(l is not None for l in labeler.label(make_pairs(8, "t"))) == 5


def test_missing_price_is_an_error_at_startup(tmp_path):
    from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle

    paid = OpenAIOracle(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(BudgetError, match="is paid but has no price configured"):
        Labeler(paid, Budget(labels=10), ledger)
    with pytest.raises(BudgetError, match="price_input_per_mtok"):
        check_prices(paid)
    priced = OpenAIOracle(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="m", price_input_per_mtok=0.15,
                                       price_output_per_mtok=0.6))
    assert check_prices(priced) == (0.15, 0.6)
    local = OpenAIOracle(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="m", free=True))
    assert check_prices(local) is None  # explicitly free: no price needed

    class NoPrice(CostlyOracle):
        def prices(self):
            return None

    with pytest.raises(BudgetError, match="no price configured"):
        check_prices(NoPrice(CostlyConfig()))
    ledger.close()


def test_restore_charges_paid_rows_and_lost_requests(tmp_path):
    path = tmp_path / "ledger.sqlite"
    oracle = CostlyOracle(CostlyConfig(concurrency=4, max_cost=0.01))
    ledger = Ledger(path)
    labeler = Labeler(oracle, Budget(dollars=1.0), ledger)
    pairs = make_pairs(6)
    labeler.label(pairs[:4])
    paid = ledger.totals()["dollars"]
    # a request in flight when the process died: its pending row is all that is left
    ledger.begin(labeler.key(pairs[5]), pairs[5], "train", oracle.name, Spend(1, 0.01, 500))
    ledger.close()
    ledger = Ledger(path)
    assert len(ledger.recovered) == 1 and ledger.pending() == [] and len(ledger.lost()) == 1
    b = Budget(dollars=1.0)
    got = b.restore(ledger)
    assert got["lost_requests"] == 1 and got["paid_rows"] == 4
    assert b.spent.dollars == pytest.approx(paid + 0.01)
    assert b.spent.labels == 0  # labels are re-counted when the loop re-labels (as ledger hits)
    ledger.close()


def test_exhausted_when_not_even_the_cheapest_request_fits():
    b = Budget(dollars=0.10)
    r = b.reserve(Spend(1, 0.03, 100))
    b.settle(r, Spend(1, 0.025, 80))
    assert not b.exhausted
    r = b.reserve(Spend(1, 0.05, 100))
    b.settle(r, Spend(1, 0.05, 100))
    assert b.remaining()["dollars"] == pytest.approx(0.025)
    assert b.exhausted and b.stopped_by == "dollars"  # 0.025 left < 0.03, the cheapest worst case seen
    assert b.as_dict()["remaining"] == {"dollars": pytest.approx(0.025)}
