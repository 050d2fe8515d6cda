"""The ensemble during a run: refitted each round on the run's decisive labels so far.

The epistemic arms (``ensemble_uncertainty``, ``thompson``) hold one :class:`OnlineEnsemble`.
Features come from the run's frozen reference weights (the base policy: for LoRA the base with the
adapter off), so they never change during a run and are cached per completion for the whole run;
each new completion costs one forward pass, counted as ``scored`` in the ``rm_features`` stage of
``ctx.stats``. The refit (K small heads on cached features: milliseconds to seconds on a CPU) is
timed in the ``rm_fit`` stage. Below ``min_labels`` decisive labels (round 1 has none) there is no
ensemble: :meth:`refit` returns None and the arm falls back to random pairs, which it records.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rlaif.reward.ensemble import Ensemble, EnsembleConfig, fit_ensemble
from rlaif.reward.features import FeatureConfig, FeatureExtractor, pair_features
from rlaif.types import Completion

if TYPE_CHECKING:
    from rlaif.acquisition.base import AcquisitionContext


class OnlineEnsemble:
    def __init__(self, ensemble: EnsembleConfig, features: FeatureConfig, min_labels: int) -> None:
        self.ens_cfg, self.feat_cfg, self.min_labels = ensemble, features, min_labels
        self.fx: FeatureExtractor | None = None

    def extractor(self, ctx: "AcquisitionContext") -> FeatureExtractor:
        """The run-wide extractor over the policy's frozen reference weights (made on first use)."""
        if self.fx is None:
            policy = getattr(ctx.reference_logprobs, "policy", None)
            if policy is None:
                raise RuntimeError("the epistemic arms need the run's policy (ctx.reference_logprobs.policy) "
                                   "to compute frozen features")
            self.fx = FeatureExtractor.of_policy(policy, self.feat_cfg)
        return self.fx

    def features(self, completions: Sequence[Completion], ctx: "AcquisitionContext",
                 stage: str = "rm_features") -> np.ndarray:
        """Feature vectors of ``completions``; new ones cost a counted forward pass each."""
        return self.extractor(ctx).counted(completions, ctx.stats, stage)

    def refit(self, ctx: "AcquisitionContext") -> Ensemble | None:
        """The ensemble of this round, fitted on ``ctx.preferences``; None below ``min_labels``."""
        prefs = list(ctx.preferences)
        if len(prefs) < max(1, self.min_labels):
            return None
        chosen, rejected = pair_features(self.extractor(ctx), prefs, ctx.stats)
        with ctx.stats.stage("rm_fit"):
            # seeded by the run's seed and the round: the same labels give the same heads
            cfg = replace(self.ens_cfg, seed=int(ctx.seed) * 10007 + int(ctx.round))
            return fit_ensemble(chosen, rejected, cfg)
