"""Reward models from bought labels (issue 16, part 2): ``rlaif fit-rm`` on a real ledger (pairs of
the tiny model's tokens, labelled by the keyword judge through the Labeler), its held-out agreement
on a learnable signal, and the fitted ensemble as a judge (``oracle=fitted_rm``)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from rlaif.assets import tiny_dir
from rlaif.cli.fit_rm import main as fit_rm_main
from rlaif.oracle.base import OracleError
from rlaif.oracle.fitted_rm import FittedRMConfig, FittedRMOracle
from rlaif.oracle.simulated import SimulatedConfig, SimulatedOracle
from rlaif.registry import build
from rlaif.reward.ensemble import Ensemble, EnsembleConfig, agreement, fit_ensemble
from rlaif.reward.features import FeatureConfig, FeatureExtractor
from rlaif.types import Completion, Outcome, Pair, Prompt

POS, NEG = ["great", "good", "wonderful", "love", "best"], ["bad", "boring", "awful", "dull", "worst"]
FILLER = ["the", "plot", "acting", "film", "was", "and", "really", "quite", "story", "ending"]


def sentiment_pairs(n: int, seed: int = 0) -> list[Pair]:
    """``n`` pairs of the tiny tokenizer's tokens: filler words and a few sentiment words per side."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ptext = f"Review {i}: I watched this movie and"
        p = Prompt(f"s{seed}-{i}", ptext, tuple(tok(ptext)["input_ids"]))

        def side() -> Completion:
            words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POS if rng.random() < 0.5 else NEG)
                                                              for _ in range(rng.randint(1, 3))]
            rng.shuffle(words)
            text = " " + " ".join(words)
            return Completion(p, text, tuple(tok(text)["input_ids"]))

        out.append(Pair(p, side(), side(), round=1))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory whose ledger holds 240 pairs labelled by the keyword judge (a real Labeler)."""
    from rlaif.labels.labeler import Labeler
    from rlaif.labels.ledger import Ledger

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("run")
    (d / "config.json").write_text(json.dumps({"policy": {"name_or_path": str(tiny_dir())}}))
    oracle = SimulatedOracle(SimulatedConfig(flip_rate=0.0, position_bias=0.0, seed=0))
    ledger = Ledger(d / "ledger.sqlite")
    labeler = Labeler(oracle, None, ledger, progress=False)
    try:
        labels = labeler.label(sentiment_pairs(240))
    finally:
        labeler.close()
        ledger.close()
    assert sum(lab is not None and lab.outcome.decisive for lab in labels) > 150
    return d


def test_fit_rm_learns_the_judge_and_reports_held_out_agreement(run_dir, tmp_path, capsys):
    out = tmp_path / "rm"
    assert fit_rm_main([str(run_dir), "--out", str(out), "--k", "4", "--layer", "0", "--seed", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    ho = rep["held_out"]
    assert ho["n"] >= 20 and ho["agreement"] > 0.6, rep  # chance is 0.5
    assert ho["ci95"][0] < ho["agreement"] < ho["ci95"][1] and ho["ci95"][0] > 0.5, rep
    meta = json.loads((out / "rm.json").read_text())
    assert meta["ensemble"]["k"] == 4 and meta["features"]["model"] == str(tiny_dir()) and meta["features"]["layer"] == 0
    assert (out / "features.pt").exists() and "held-out agreement" in capsys.readouterr().out
    # the feature cache is used by a second fit: no forward pass
    assert fit_rm_main([str(run_dir), "--out", str(out), "--k", "4", "--layer", "0", "--seed", "1"]) == 0
    assert json.loads((out / "report.json").read_text())["feature_passes"] == 0

    # the ensemble as a judge: oracle=fitted_rm, built from its config node like every oracle
    judge = build({"_target_": "rlaif.oracle.fitted_rm.FittedRMOracle", "path": str(out)}, "oracle")
    assert isinstance(judge, FittedRMOracle) and judge.free
    pairs = sentiment_pairs(60, seed=7)
    labels = judge.label(pairs)
    gold = SimulatedOracle(SimulatedConfig(flip_rate=0.0, position_bias=0.0)).label(pairs)
    assert all(lab.outcome.decisive and 0 < lab.p_a < 1 and (lab.p_a > 0.5) == (lab.outcome is Outcome.A)
               for lab in labels)
    agree = np.mean([a.outcome is g.outcome for a, g in zip(labels, gold) if g.outcome.decisive])
    assert agree > 0.6, agree
    assert judge.identity()["ensemble"] and judge.label(pairs[:5])[0].outcome is labels[0].outcome  # deterministic


def test_fitted_rm_without_a_directory_is_an_oracle_error(tmp_path):
    with pytest.raises(OracleError, match="fit-rm"):
        FittedRMOracle(FittedRMConfig(path=str(tmp_path))).label(sentiment_pairs(1))


def test_ensemble_heads_differ_fit_is_seeded_and_saves_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=6)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    better = (a @ w > b @ w)[:, None]
    chosen, rejected = np.where(better, a, b), np.where(better, b, a)
    ens = fit_ensemble(chosen[:150], rejected[:150], EnsembleConfig(k=5, seed=3))
    assert agreement(ens, chosen[150:], rejected[150:])["agreement"] > 0.85
    r = ens.member_rewards(a[:10])
    assert r.shape == (5, 10) and np.ptp(r, axis=0).max() > 0  # bootstrap: the heads differ
    again = fit_ensemble(chosen[:150], rejected[:150], EnsembleConfig(k=5, seed=3))
    np.testing.assert_allclose(again.member_rewards(a[:10]), r)
    ens.save(tmp_path, {"features": FeatureConfig().to_dict()})
    loaded, meta = Ensemble.load(tmp_path)
    np.testing.assert_allclose(loaded.member_rewards(a[:10]), r, rtol=1e-6)


def test_features_are_cached_per_completion():
    fx = FeatureExtractor.load(FeatureConfig(model=str(tiny_dir())))
    pairs = sentiment_pairs(3)
    comps = [c for p in pairs for c in (p.a, p.b)]
    f = fx(comps)
    assert f.shape == (6, 64) and fx.passes == 6
    np.testing.assert_allclose(fx(comps[:2]), f[:2])
    assert fx.passes == 6


def test_a_run_without_its_ledger_is_read_from_its_preferences(tmp_path):
    """A committed or copied run keeps preferences.jsonl, not its ledger: fit-rm reads the same pairs from it."""
    from rlaif.reward.fit import decisive_labels
    from rlaif.types import Label, preference_row

    pairs = sentiment_pairs(6)
    labels = [Label(outcome=Outcome.A if i % 2 else Outcome.B, judge="kw") for i in range(6)]
    (tmp_path / "preferences.jsonl").write_text(
        "".join(json.dumps(preference_row(p, lab)) + "\n" for p, lab in zip(pairs, labels)))
    got = decisive_labels([tmp_path])
    assert len(got) == 6 and all(lab.outcome is Outcome.A for _, lab in got)
    for (pair, _), p, lab in zip(got, pairs, labels):
        chosen, rejected = (p.a, p.b) if lab.outcome is Outcome.A else (p.b, p.a)
        assert (pair.a.text, pair.a.token_ids, pair.b.token_ids) == (chosen.text, chosen.token_ids, rejected.token_ids)
        assert pair.prompt.id == p.prompt.id and pair.prompt.token_ids == p.prompt.token_ids
    with pytest.raises(FileNotFoundError, match="nor preferences.jsonl"):
        decisive_labels([tmp_path / "nothing"])
