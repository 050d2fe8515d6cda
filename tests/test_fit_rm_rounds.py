"""``reward_model.fit_each_round=true`` (issue 16, part 2): after each round's labels, the head ensemble on the
run's decisive labels so far in RUN_DIR/rm/round-<r>/, its cost in the round's metrics, each a judge for
``oracle=fitted_rm``; off by default."""

from __future__ import annotations

import json

import numpy as np

from helpers import cfg, rlaif, tiny
from rlaif.labels.preferences import chosen_rejected
from rlaif.registry import build
from rlaif.reward.fit import decisive_labels, split
from rlaif.reward.rounds import RoundRewardModels
from rlaif.types import Outcome, Pair


def test_off_by_default():
    assert cfg("policy=tiny").reward_model.fit_each_round is False


def test_a_run_fits_a_reward_model_each_round_that_oracle_fitted_rm_serves(tmp_path):
    run = tmp_path / "run"
    r = rlaif("run", *tiny("budget.labels=24", "budget.labels_per_round=8", "reward_model.fit_each_round=true",
                           "reward_model.k=3", "reward_model.steps=50", "reward_model.min_labels=4"),
              f"hydra.run.dir={run}", timeout=600, full_error=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3]
    passes = []
    for m in lines:
        rm = m["reward_model"]
        d = run / "rm" / f"round-{m['round']}"
        assert rm["dir"] == str(d) and rm["fitted"] and rm["labels"] == m["decisive"], rm
        assert {"ensemble.pt", "rm.json", "report.json"} <= {f.name for f in d.iterdir()}
        report = json.loads((d / "report.json").read_text())
        assert report["held_out"] == rm["held_out"] and report["labels"] == m["decisive"]
        assert rm["stages"]["rm_fit"]["seconds"] > 0 and rm["seconds"] >= rm["stages"]["rm_fit"]["seconds"]
        passes.append(rm["stages"]["rm_features"]["scored"])
        meta = json.loads((d / "rm.json").read_text())
        assert meta["round"] == m["round"] and meta["features"]["model"] == "tiny" and meta["ensemble"]["k"] == 3
    # one forward pass per new completion: the features of earlier rounds come from the run-wide cache
    assert passes == [2 * lines[0]["decisive"]] + [2 * (b["decisive"] - a["decisive"]) for a, b in zip(lines, lines[1:])]

    # each round's directory is a judge that reloads the features from disk (the policy named in rm.json):
    # on round 3's held-out prompts it agrees with the labels exactly as the run reported
    prefs = decisive_labels([run])
    _, test = split(prefs, 0.2, 0)
    judge = build({"_target_": "rlaif.oracle.fitted_rm.FittedRMOracle", "path": str(run / "rm" / "round-3")}, "oracle")
    labels = judge.label([Pair(p.prompt, *chosen_rejected(p, lab)) for p, lab in test])
    assert all(0 < lab.p_a < 1 for lab in labels)
    held = lines[-1]["reward_model"]["held_out"]
    assert held["n"] == len(test) and np.mean([lab.outcome is Outcome.A for lab in labels]) == held["agreement"]
    assert judge.identity()["ensemble"] != build({"_target_": "rlaif.oracle.fitted_rm.FittedRMOracle",
                                                  "path": str(run / "rm" / "round-1")}, "oracle").identity()["ensemble"]

    # a round fitted already (a resumed run) is not fitted again: no policy needed, the saved figures
    again = RoundRewardModels(cfg("policy=tiny", "reward_model.min_labels=4").reward_model, run / "rm").fit(
        3, prefs, policy=None)
    assert again["fitted"] is False and again["held_out"] == held
    # below min_labels nothing is fitted or written
    skipped = RoundRewardModels(cfg("policy=tiny").reward_model, tmp_path / "rm").fit(9, prefs[:3], policy=None)
    assert "skipped" in skipped and not (tmp_path / "rm").exists()
