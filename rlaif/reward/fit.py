"""``rlaif fit-rm``'s work: a reward-model ensemble from the decisive labels in runs' ledgers.

Reads every decisive ``train`` label of the runs' ``ledger.sqlite`` (ties and invalid answers teach
no preference), splits them by prompt into a training set and a held-out set (seeded), extracts the
frozen base policy's features of both sides (cached in the output directory), fits the ensemble on
the training set and reports its held-out agreement with the oracle (with a 95% Wilson interval).
The saved ensemble is the one fitted on the training split: the agreement it reports is its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rlaif.labels.ledger import Ledger
from rlaif.labels.preferences import chosen_rejected
from rlaif.reward.ensemble import Ensemble, EnsembleConfig, agreement, fit_ensemble
from rlaif.reward.features import FeatureConfig, FeatureExtractor
from rlaif.types import Label, Outcome, Pair

FEATURE_CACHE = "features.pt"


@dataclass
class FitConfig:
    held_out: float = field(default=0.2, metadata={"help": "share of prompts held out for the agreement"})
    seed: int = 0
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)


def decisive_labels(run_dirs: Sequence[str | Path], purpose: str = "train") -> list[tuple[Pair, Label]]:
    """Every decisive label of the runs' ledgers, as (pair, label), in ledger order."""
    out = []
    for d in run_dirs:
        path = Path(d) / "ledger.sqlite" if Path(d).is_dir() else Path(d)
        if not path.exists():
            raise FileNotFoundError(f"{d}: no ledger.sqlite")
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


def pair_features(fx: FeatureExtractor, prefs: Sequence[tuple[Pair, Label]]) -> tuple[np.ndarray, np.ndarray]:
    """Features of the chosen and of the rejected side of every preference."""
    sides = [chosen_rejected(p, lab) for p, lab in prefs]
    feats = fx([c for s in sides for c in s])
    return feats[0::2], feats[1::2]


def fit_rm(run_dirs: Sequence[str | Path], out: str | Path, cfg: FitConfig,
           fx: FeatureExtractor | None = None) -> dict:
    """Fit, evaluate on the held-out split, save to ``out``; the report (also ``out/report.json``)."""
    out = Path(out)
    prefs = decisive_labels(run_dirs)
    if len(prefs) < 2:
        raise ValueError(f"{len(prefs)} decisive labels in {list(map(str, run_dirs))}: too few to fit a reward model")
    fx = fx or FeatureExtractor.load(cfg.features)
    cache = out / FEATURE_CACHE
    if cache.exists():
        fx.cache.update({k: v.numpy() for k, v in torch.load(cache, weights_only=True).items()})
    train, test = split(prefs, cfg.held_out, cfg.seed)
    ens = fit_ensemble(*pair_features(fx, train), cfg.ensemble)
    report = {"runs": [str(d) for d in run_dirs], "labels": len(prefs), "train": len(train),
              "held_out": agreement(ens, *pair_features(fx, test)) if test else {"n": 0, "agreement": None},
              "train_agreement": agreement(ens, *pair_features(fx, train)), "feature_passes": fx.passes}
    ens.save(out, {"features": fx.cfg.to_dict(), "fit": {"held_out": cfg.held_out, "seed": cfg.seed},
                   "report": report})
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.from_numpy(v) for k, v in fx.cache.items()}, cache)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def load_rm(path: str | Path) -> tuple[Ensemble, FeatureExtractor, dict]:
    """A saved ensemble and an extractor of the features it was fitted on."""
    ens, meta = Ensemble.load(path)
    return ens, FeatureExtractor.load(FeatureConfig(**meta["features"])), meta

