"""A run's reward model of every round (``reward_model.fit_each_round=true``): RUN_DIR/rm/round-<r>/.

After round r's labels are committed, the head ensemble of ``rlaif fit-rm`` is fitted on the run's
decisive labels so far (:func:`rlaif.reward.fit.fit_preferences`: the same prompt split, held-out
agreement and files), on frozen features of the run's own reference weights (the base policy, as
the epistemic arms use them: :meth:`FeatureExtractor.of_policy`), cached per completion for the
whole run, so each round costs one forward pass per new completion (stage ``rm_features``) and the
fit (stage ``rm_fit``); both are in the round's ``reward_model`` entry of metrics.jsonl. Each
directory is a free judge: ``oracle=fitted_rm oracle.path=RUN_DIR/rm/round-<r>`` (its rm.json names
the policy, so the judge reloads the same features from disk). A round whose directory is complete
already (a resumed run) is not fitted again. Off by default: nothing is fitted or written.

The options are :class:`~rlaif.reward.round_config.RoundRMConfig` (``reward_model.*`` of the run's config).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from rlaif.reward.ensemble import META, EnsembleConfig
from rlaif.reward.features import FeatureConfig, FeatureExtractor
from rlaif.reward.fit import FitConfig, fit_preferences
from rlaif.reward.round_config import RoundRMConfig

log = logging.getLogger("rlaif")


class RoundRewardModels:
    """The run's per-round fits, sharing one feature cache over the run's policy."""

    def __init__(self, cfg: RoundRMConfig, root: str | Path, seed: int = 0) -> None:
        self.cfg, self.root, self.seed = cfg, Path(root), int(seed)
        self.fx = None

    def dir(self, r: int) -> Path:
        return self.root / f"round-{r}"

    def fit(self, r: int, prefs: Sequence[tuple], policy: Any) -> dict:
        """Round ``r``'s ensemble on ``prefs`` (decisive (pair, label)s so far) -> its metrics entry."""
        cfg, out = self.cfg, self.dir(r)
        if len(prefs) < max(2, int(cfg.min_labels)):
            return self._skipped(r, f"{len(prefs)} decisive labels (min_labels={cfg.min_labels})")
        if (out / "report.json").exists() and (out / META).exists():  # fitted by an earlier process
            report, fresh = json.loads((out / "report.json").read_text()), False
        else:
            if self.fx is None:
                self.fx = FeatureExtractor.of_policy(policy, FeatureConfig(layer=cfg.layer, pooling=cfg.pooling))
            fit = FitConfig(held_out=cfg.held_out, seed=self.seed,
                            # seeded by the run's seed and the round, as the epistemic arms' refits
                            ensemble=EnsembleConfig(k=cfg.k, hidden=cfg.hidden, steps=cfg.steps,
                                                    seed=self.seed * 10007 + r))
            try:
                report = fit_preferences(prefs, out, fit, self.fx, runs=[self.root.parent], meta={"round": r})
            except ValueError as e:  # e.g. every prompt held out: no model this round, the run goes on
                return self._skipped(r, str(e))
            fresh = True
        held = report["held_out"]
        log.info("round %d: reward model in %s (%d labels), held-out agreement %s", r, out, report["labels"],
                 f"{held['agreement']:.3f} (n={held['n']})" if held["n"] else "- (no held-out prompts)")
        return {"dir": str(out), "fitted": fresh, **{k: report[k] for k in (
            "labels", "train", "held_out", "train_agreement", "feature_passes", "seconds", "stages")}}

    @staticmethod
    def _skipped(r: int, why: str) -> dict:
        log.info("round %d: no reward model: %s", r, why)
        return {"skipped": why}
