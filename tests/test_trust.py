"""What a run reports can be trusted: evaluation spend is its own and capped, identical completions are
never paid for, a win-rate carries its n, a useless judge is stopped, DPO metrics every round."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from rlaif.labels.budget import BudgetError, run_budgets
from rlaif.config import EvalConfig
from rlaif.run.evaluation import Evaluator, winrate_text
from rlaif.labels.judge_health import JudgeHealth, JudgeHealthConfig, JudgeHealthError, verdict
from rlaif.oracle.simulated import SimulatedConfig, SimulatedOracle
from rlaif.types import Completion, Prompt

from helpers import make_pairs, rlaif, tiny


def paid_judge(**kw) -> SimulatedOracle:
    """The seeded simulated judge (keyword base), priced per label, so that it counts as paid."""
    return SimulatedOracle(SimulatedConfig(**{"price_per_label": 0.001, "flip_rate": 0.0, "position_bias": 0.0, **kw}))


# -- evaluation budget -----------------------------------------------------------------------------

def test_evaluation_gets_its_own_share_of_the_budget():
    train, ev = run_budgets({"tokens": 15000, "labels": 100}, EvalConfig(), eval_judged=True)
    assert (train.limits.tokens, ev.limits.tokens) == (12000, 3000)  # 20% held back for evaluation
    assert train.limits.labels == 100 and not ev.has["labels"]
    train, ev = run_budgets({"dollars": 2.0}, EvalConfig(max_dollars=0.5), eval_judged=True)
    assert (train.limits.dollars, ev.limits.dollars) == (1.5, 0.5)
    train, ev = run_budgets({"dollars": 2.0}, EvalConfig(), eval_judged=False)  # not judged: all for training
    assert train.limits.dollars == 2.0 and ev is None
    train, ev = run_budgets({"labels": 10}, EvalConfig(), eval_judged=True)  # nothing to share: uncapped
    assert ev is None
    with pytest.raises(BudgetError, match="eval.max_dollars"):
        run_budgets({"dollars": 1.0}, EvalConfig(max_dollars=1.0), eval_judged=True)


class FixedGenerator:
    """Hands out given completions (one per prompt): what the policy 'sampled' this round."""

    name = "fixed"

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    def sample(self, prompts, params, source="policy"):
        return [[Completion(p, self.texts[p.id], (len(self.texts[p.id]), 1))] for p in prompts]


def _evaluator(tmp_path, texts, ref_texts, labeler, **cfg):
    prompts = [Prompt(pid, f"prompt {pid}", (5, i)) for i, pid in enumerate(texts)]
    ev = Evaluator(EvalConfig(prompts=len(prompts), bootstrap=200, **cfg), SimpleNamespace(max_new_tokens=8, min_new_tokens=0),
                   prompts, FixedGenerator(texts), labeler=labeler, run_dir=None)
    ev.reference = [Completion(p, ref_texts[p.id], (len(ref_texts[p.id]), 1)) for p in prompts]
    return ev


def test_identical_completions_are_free_ties_and_too_few_answers_give_no_number(tmp_path, open_labeler):
    texts = {f"q{i}": f"a great and good film {i}" for i in range(16)}
    labeler, ledger = open_labeler(paid_judge(), None, eval_budget=None)
    # round 1: nothing trained, the policy says exactly what the reference says
    out = _evaluator(tmp_path, texts, texts, labeler).evaluate(1)
    assert ledger.totals(purpose="eval")["paid"] == 0 and out["oracle_eval_cost"] == 0.0
    assert out["oracle_eval_identical"] == 16 and out["oracle_winrate"] == 0.5
    assert out["oracle_winrate_n"] == 16
    # one prompt differs, the judge answers it; the other 15 are ties at no cost
    changed = {**texts, "q0": "a bad and awful film"}
    out = _evaluator(tmp_path, changed, texts, labeler, min_judged=20).evaluate(2)
    assert ledger.totals(purpose="eval")["paid"] == 1
    assert "oracle_winrate" not in out and out["oracle_winrate_note"] == "too few valid answers (16 of 16)"
    assert winrate_text(out, "oracle_winrate") == "too few valid answers (16 of 16)"


def test_evaluation_stops_at_its_cap_with_a_warning_and_training_keeps_its_share(tmp_path, caplog, open_labeler):
    texts = {f"q{i}": f"a great film number {i}" for i in range(40)}
    refs = {k: f"a bad film {k}" for k in texts}
    train, ev_budget = run_budgets({"dollars": 0.05}, EvalConfig(max_dollars=0.01), eval_judged=True)
    labeler, _ = open_labeler(paid_judge(batch_size=1), train, eval_budget=ev_budget)
    with caplog.at_level(logging.WARNING):
        out = _evaluator(tmp_path, texts, refs, labeler).evaluate(1)
    assert out["oracle_eval_refused"] == 30 and out["oracle_eval_judged"] == 10
    assert "evaluation budget ran out after 10 of 40 judgements" in caplog.text
    assert ev_budget.spent.dollars == pytest.approx(0.01) and train.spent.dollars == 0.0
    # the training labels still have their whole share
    labels = labeler.label(make_pairs(40), purpose="train")
    assert sum(lab is not None for lab in labels) == 40 and train.spent.dollars == pytest.approx(0.04)


# -- judge health --------------------------------------------------------------------------------

@pytest.mark.parametrize("flaw, words", [({"position_bias": 1.0}, "shown first"),
                                         ({"failure_rate": 0.95}, "were invalid")])
def test_a_useless_judge_is_stopped_after_its_first_answers(open_labeler, flaw, words):
    oracle = paid_judge(batch_size=4, concurrency=1, **flaw)
    labeler, ledger = open_labeler(oracle, None, health=JudgeHealth(JudgeHealthConfig(), oracle.name))
    with pytest.raises(JudgeHealthError, match=words):
        labeler.label(make_pairs(200))
    t = ledger.totals()
    assert 20 <= t["rows"] + ledger.totals()["failed"] <= 24  # stopped after ~20 answers, not 200


def test_a_good_judge_passes_the_health_guard(open_labeler):
    oracle = paid_judge(batch_size=4, concurrency=1)
    labeler, _ = open_labeler(oracle, None, health=JudgeHealth(JudgeHealthConfig(), oracle.name))
    assert all(lab is not None for lab in labeler.label(make_pairs(100)))


def test_health_verdict_thresholds():
    cfg = JudgeHealthConfig()
    assert verdict(19, 19, 0, 0, cfg) is None  # too early to tell
    assert "invalid" in verdict(20, 11, 9, 4, cfg)
    assert verdict(20, 10, 10, 5, cfg) is None
    assert "shown first" in verdict(40, 0, 40, 2, cfg) and verdict(40, 0, 40, 8, cfg) is None


# -- the loop: eval spend, n, DPO metrics -----------------------------------------------------------

def test_run_reports_eval_spend_apart_n_and_dpo_metrics_every_round(tmp_path):
    run = tmp_path / "run"
    r = rlaif("run", *tiny("trainer.batch_size=4", "trainer.micro_batch_size=4"), "oracle=simulated",
              "oracle.price_per_label=0.001", "eval.with_oracle=true", "budget.dollars=0.05",
              "budget.labels_per_round=8", "budget.max_rounds=2", f"hydra.run.dir={run}", timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        assert m["eval_spend"]["dollars"] <= 0.01 + 1e-9  # 20% of the budget, held for evaluation
        assert m["spend"]["limits"]["dollars"] == pytest.approx(0.04)
        assert m["gold_winrate_n"] == 12 and m["oracle_eval_asked"] == 12
        assert m["train"]["reward_accuracy"] is not None and m["train"]["reward_margin"] is not None
    summary = json.loads((run / "summary.json").read_text())
    # every paid evaluation judgement is counted (a request asked in an earlier round is a free ledger hit)
    assert 0 < summary["eval_spend"]["judgements"] <= sum(m["oracle_eval_asked"] - m["oracle_eval_identical"]
                                                          - m["oracle_eval_refused"] for m in metrics)
    assert summary["eval_spend"]["dollars"] == pytest.approx(0.001 * summary["eval_spend"]["judgements"])
    assert "spend on evaluation:" in r.stdout and "(n=12)" in r.stdout
    log = r.stdout + r.stderr
    assert "this round 8 labels" in log and "so far 16 labels" in log
