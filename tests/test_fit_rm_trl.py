"""``rlaif fit-rm --trainer trl`` (issue 16, part 2): a whole reward model trained with TRL's RewardTrainer on
a real ledger (the tiny model's tokens, labelled by the keyword judge), reported like the ensemble, saved as a
Hugging Face directory that ``oracle=reward_model`` (and ``oracle=fitted_rm``) serves as a judge."""

from __future__ import annotations

import json

import numpy as np
import torch

from rlaif.assets import tiny_dir
from rlaif.cli.fit_rm import build_parser
from rlaif.cli.fit_rm import main as fit_rm_main
from rlaif.labels.preferences import chosen_rejected
from rlaif.oracle.simulated import SimulatedConfig, SimulatedOracle
from rlaif.registry import build
from rlaif.reward.fit import decisive_labels, split
from rlaif.types import Outcome, Pair
from test_reward_ensemble import run_dir, sentiment_pairs  # noqa: F401 -- run_dir: the labelled ledger fixture

# the keys both trainers' report.json have
REPORT_KEYS = {"trainer", "runs", "labels", "train", "held_out", "train_agreement", "seconds"}


def test_fit_rm_trl_trains_a_model_that_oracle_reward_model_serves(run_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "rm"
    assert fit_rm_main([str(run_dir), "--out", str(out), "--trainer", "trl", "--epochs", "3", "--lr", "1e-3"]) == 0
    assert "fit-rm (trl)" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(rep) and rep["trainer"] == "trl", rep
    assert rep["labels"] > 150 and rep["too_long"] == 0 and rep["steps"] >= 60, rep
    # training moved the model: on the pairs it was fitted on it agrees with the judge far above chance (0.5),
    # and it generalises to the held-out prompts
    assert rep["train_agreement"]["agreement"] > 0.7, rep
    ho = rep["held_out"]
    assert ho["n"] >= 20 and ho["ci95"][0] < ho["agreement"] < ho["ci95"][1] and ho["agreement"] > 0.6, rep
    meta = json.loads((out / "rm.json").read_text())
    assert meta["trainer"] == "trl" and meta["score_text"] == "prompt+completion" and meta["model"] == str(tiny_dir())
    assert "oracle.score_text=prompt+completion" in (out / "README.md").read_text()

    # every weight of the base moved, not only the new head
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    base = AutoModelForCausalLM.from_pretrained(tiny_dir()).transformer.h[0].mlp.c_fc.weight
    trained = AutoModelForSequenceClassification.from_pretrained(out).transformer.h[0].mlp.c_fc.weight
    assert trained.shape == base.shape and not torch.allclose(trained, base)

    # the directory is a judge: oracle=reward_model on the text it was trained on ...
    judge = build({"_target_": "rlaif.oracle.reward_model.RewardModelOracle", "model": str(out),
                   "score_text": "prompt+completion"}, "oracle")
    assert judge.free
    # ... whose agreement on the held-out split is exactly the one reported
    _, test = split(decisive_labels([run_dir]), 0.2, 0)
    labels = judge.label([Pair(p.prompt, *chosen_rejected(p, lab)) for p, lab in test])
    assert len(test) == ho["n"] and np.mean([lab.outcome is Outcome.A for lab in labels]) == ho["agreement"]
    # on new pairs it labels like the judge it learned from, above chance
    pairs = sentiment_pairs(60, seed=7)
    served = judge.label(pairs)
    gold = SimulatedOracle(SimulatedConfig(flip_rate=0.0, position_bias=0.0)).label(pairs)
    agree = np.mean([a.outcome is g.outcome for a, g in zip(served, gold) if g.outcome.decisive])
    assert agree > 0.6, agree
    # oracle=fitted_rm serves it too (score_text from rm.json), with P(a), the same verdicts
    fitted = build({"_target_": "rlaif.oracle.fitted_rm.FittedRMOracle", "path": str(out)}, "oracle")
    again = fitted.label(pairs)
    assert [a.outcome for a in again] == [s.outcome for s in served]
    assert all(0 < a.p_a < 1 and (a.p_a > 0.5) == (a.outcome is Outcome.A) for a in again)
    assert fitted.identity()["model"] and fitted.identity()["ensemble"] is None


def test_fit_rm_help_names_both_trainers():
    text = build_parser().format_help()
    assert "--trainer {ensemble,trl}" in text and "RewardTrainer" in text and "oracle=fitted_rm" in text
