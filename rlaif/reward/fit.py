"""``rlaif fit-rm``'s work: a reward model from the decisive labels in runs' ledgers.

Reads every decisive ``train`` label of the runs' ``ledger.sqlite`` (ties and invalid answers teach
no preference) and splits them by prompt into a training set and a held-out set (seeded). The
default trainer extracts the frozen base policy's features of both sides (cached in the output
directory), fits the head ensemble on the training set (:func:`fit_preferences`, also what a run's
``reward_model.fit_each_round`` calls on its labels so far) and reports its held-out agreement with
the oracle (with a 95% Wilson interval); ``--trainer trl`` trains a whole sequence-classification
model instead (:mod:`rlaif.reward.trl_rm`), reported the same way. The saved model is the one
fitted on the training split: the agreement it reports is its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rlaif.labels.ledger import Ledger
from rlaif.reward.ensemble import Ensemble, EnsembleConfig, agreement, fit_ensemble
from rlaif.reward.features import FeatureConfig, FeatureExtractor, pair_features
from rlaif.types import Label, Outcome, Pair

FEATURE_CACHE = "features.pt"


@dataclass
class FitConfig:
    held_out: float = field(default=0.2, metadata={"help": "share of prompts held out for the agreement"})
    seed: int = 0
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)


def decisive_labels(run_dirs: Sequence[str | Path], purpose: str = "train") -> list[tuple[Pair, Label]]:
    """Every decisive label of the runs' ledgers, as (pair, label), in ledger order. A run directory
    without its ledger (a committed or copied run) is read from its ``preferences.jsonl`` instead."""
    out = []
    for d in run_dirs:
        path = Path(d) / "ledger.sqlite" if Path(d).is_dir() else Path(d)
        if not path.exists() and (Path(d) / "preferences.jsonl").exists():
            out += preference_rows(Path(d) / "preferences.jsonl")
            continue
        if not path.exists():
            raise FileNotFoundError(f"{d}: no ledger.sqlite (nor preferences.jsonl)")
        with Ledger(path, readonly=True) as led:
            for r in led.rows(purpose=purpose):
                if Outcome(r["outcome"]).decisive:
                    out.append((Pair.from_dict(json.loads(r["pair_json"])),
                                Label(outcome=r["outcome"], p_a=r["p_a"], judge=r["judge"])))
    return out


def base_policy(run_dirs: Sequence[str | Path]) -> str | None:
    """The base policy the runs were made with (their config.json), where every run says the same."""
    names = set()
    for d in run_dirs:
        cfg = Path(d) / "config.json"
        if cfg.exists():
            names.add(((json.loads(cfg.read_text()).get("policy") or {}).get("name_or_path")))
    return names.pop() if len(names) == 1 else None


def split(prefs: Sequence[tuple[Pair, Label]], held_out: float, seed: int) -> tuple[list, list]:
    """(train, held-out): whole prompts held out, a seeded ``held_out`` share of them."""
    prompts = sorted({p.prompt.id for p, _ in prefs})
    rng = np.random.default_rng(seed)
    k = int(round(held_out * len(prompts)))
    out = {prompts[i] for i in rng.permutation(len(prompts))[:k]}
    return [x for x in prefs if x[0].prompt.id not in out], [x for x in prefs if x[0].prompt.id in out]


def preference_rows(path: Path) -> list[tuple[Pair, Label]]:
    """A run's ``preferences.jsonl`` as (pair, label): chosen as a, rejected as b, outcome A (the rows
    keep the sampled token ids, so the features are those of the exact tokens that were judged)."""
    from rlaif.types import Completion, Prompt

    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if not isinstance(row["prompt"], str):
            raise ValueError(f"{path}: conversational rows; fit on the run's ledger.sqlite instead")
        prompt = Prompt(row["prompt_id"], row["prompt"], tuple(row["prompt_input_ids"]))
        pair = Pair(prompt, Completion(prompt, row["chosen"], tuple(row["chosen_input_ids"])),
                    Completion(prompt, row["rejected"], tuple(row["rejected_input_ids"])), round=row.get("round", 0))
        out.append((pair, Label(outcome=Outcome.A, judge=row.get("judge", ""))))
    return out


def preferences_of(run_dirs: Sequence[str | Path]) -> list[tuple[Pair, Label]]:
    """The runs' decisive train labels, refused (ValueError) when there are too few to fit on."""
    prefs = decisive_labels(run_dirs)
    if len(prefs) < 2:
        raise ValueError(f"{len(prefs)} decisive labels in {list(map(str, run_dirs))}: too few to fit a reward model")
    return prefs


def write_report(out: Path, report: dict) -> dict:
    """``out/report.json`` (the same keys for every trainer: labels, train, held_out, train_agreement, ...)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def fit_rm(run_dirs: Sequence[str | Path], out: str | Path, cfg: FitConfig,
           fx: FeatureExtractor | None = None) -> dict:
    """Fit on the runs' decisive labels, evaluate on the held-out split, save to ``out``; the report
    (also ``out/report.json``). Features are cached in ``out/features.pt`` for the next fit."""
    out = Path(out)
    prefs = preferences_of(run_dirs)
    fx = fx or FeatureExtractor.load(cfg.features)
    cache = out / FEATURE_CACHE
    if cache.exists():
        fx.cache.update({k: v.numpy() for k, v in torch.load(cache, weights_only=True).items()})
    report = fit_preferences(prefs, out, cfg, fx, runs=run_dirs)
    torch.save({k: torch.from_numpy(v) for k, v in fx.cache.items()}, cache)
    return report


def fit_preferences(prefs: Sequence[tuple[Pair, Label]], out: str | Path, cfg: FitConfig, fx: FeatureExtractor,
                    runs: Sequence[str | Path] = (), meta: dict | None = None) -> dict:
    """The ensemble of ``cfg`` on decisive (pair, label)s: fitted on the training split of the prompts,
    evaluated on the held-out one, saved to ``out`` (``meta`` joins its rm.json); the report, with
    what it cost (``stages``: ``rm_features`` forward passes as ``scored``, ``rm_fit``; seconds)."""
    from rlaif.acquisition.base import ComputeStats

    out, stats = Path(out), ComputeStats()
    train, test = split(prefs, cfg.held_out, cfg.seed)
    if not train:
        raise ValueError(f"{len(prefs)} decisive labels, none left to fit on after holding out {cfg.held_out:.0%}")
    fit_sides, test_sides = pair_features(fx, train, stats), pair_features(fx, test, stats)
    with stats.stage("rm_fit"):
        ens = fit_ensemble(*fit_sides, cfg.ensemble)
    report = {"trainer": "ensemble", "runs": [str(d) for d in runs], "labels": len(prefs), "train": len(train),
              "held_out": agreement(ens, *test_sides), "train_agreement": agreement(ens, *fit_sides),
              "feature_passes": stats.totals().scored, "seconds": stats.totals().seconds, "stages": stats.as_dict()}
    ens.save(out, {"trainer": "ensemble", "features": fx.cfg.to_dict(),
                   "fit": {"held_out": cfg.held_out, "seed": cfg.seed}, **(meta or {}), "report": report})
    return write_report(out, report)


def load_rm(path: str | Path) -> tuple[Ensemble, FeatureExtractor, dict]:
    """A saved ensemble and an extractor of the features it was fitted on."""
    ens, meta = Ensemble.load(path)
    return ens, FeatureExtractor.load(FeatureConfig(**meta["features"])), meta
