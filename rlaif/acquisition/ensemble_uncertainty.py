"""ensemble_uncertainty: spend labels where a reward-model ensemble fitted on the labels so far disagrees.

Each round (from the second on) K small Bradley-Terry heads are refitted on the run's decisive
labels so far (``ctx.preferences``), over frozen features of the base policy
(:mod:`rlaif.reward.online`). Then, like ``certainty``, f*n random on-policy pairs are generated
and the n kept are those whose P(a > b) = sigmoid(r_k(a) - r_k(b)) varies most across the heads
k (its standard deviation: epistemic uncertainty, not the aleatoric 'P near 1/2').

Compute per label: f pair generations (2f completions) and one feature forward pass per new
completion (``rm_features``), plus the refit (``rm_fit``). Round 1, or fewer than ``min_labels``
decisive labels: no ensemble yet, so n random pairs (stage ``random_fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rlaif.acquisition.base import Acquisition, AcquisitionConfig, AcquisitionContext, shuffled_pool
from rlaif.reward.ensemble import EnsembleConfig
from rlaif.reward.features import FeatureConfig
from rlaif.reward.online import OnlineEnsemble
from rlaif.types import Pair, Prompt

FALLBACK = "random_fallback"


@dataclass
class EnsembleArmConfig(AcquisitionConfig):
    """What both epistemic arms share: the ensemble, its features and when it starts."""

    k: int = field(default=8, metadata={"help": "heads in the ensemble"})
    hidden: int = field(default=0, metadata={"help": "hidden units per head (0: linear heads)"})
    steps: int = field(default=200, metadata={"help": "Adam steps per head per refit"})
    layer: int = field(default=-1, metadata={"help": "hidden-state layer of the features (0: embeddings)"})
    pooling: str = field(default="mean", metadata={"help": "'mean' over completion tokens or 'last'"})
    min_labels: int = field(default=8, metadata={"help": "fewest decisive labels to fit on; fewer: random pairs"})
    tolerance: float = field(default=1e-3, metadata={"help": "scores closer than this rank as ties"})

    def online(self) -> OnlineEnsemble:
        return OnlineEnsemble(EnsembleConfig(k=self.k, hidden=self.hidden, steps=self.steps),
                              FeatureConfig(layer=self.layer, pooling=self.pooling), self.min_labels)


@dataclass
class EnsembleUncertaintyConfig(EnsembleArmConfig):
    f: int = field(default=8, metadata={"help": "pair over-generation: f*n candidate pairs, keep n"})


def random_fallback(arm: Acquisition, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
    """n random on-policy pairs, counted in the ``random_fallback`` stage (no ensemble yet)."""
    pairs = arm.pairs_down_ranking(shuffled_pool(prompts, n, ctx, arm.name), n, ctx, stage=FALLBACK)
    for p in pairs:
        p.scores["acq_random_fallback"] = 1.0
    arm.last = {"fallback": True, "candidates": pairs}
    arm.warn_short(len(pairs), n, "random fallback")
    return pairs


class EnsembleUncertaintyAcquisition(Acquisition):
    Config = EnsembleUncertaintyConfig
    name = "ensemble_uncertainty"

    def __init__(self, cfg: EnsembleUncertaintyConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        self.online = cfg.online()

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        cfg: EnsembleUncertaintyConfig = self.cfg
        ens = self.online.refit(ctx)
        if ens is None:
            return random_fallback(self, prompts, n, ctx)
        order = shuffled_pool(prompts, cfg.f * n, ctx, self.name, "candidate pairs (one per prompt)")
        candidates = self.pairs_down_ranking(order, cfg.f * n, ctx)
        if not candidates:
            return []
        feats = self.online.features([c for p in candidates for c in (p.a, p.b)], ctx)
        p_a = ens.p_first(feats[0::2], feats[1::2])  # [K, N]
        spread = p_a.std(axis=0)
        for pair, s, m in zip(candidates, spread, p_a.mean(axis=0)):
            pair.scores.update(ensemble_std=float(s), ensemble_p_a=float(m))
        self.last = {"fallback": False, "candidates": candidates}
        pairs = [candidates[i] for i in self.ranked(spread, largest=True)[:n]]
        self.warn_short(len(pairs), n, f"{len(candidates)} candidate pairs")
        return pairs

