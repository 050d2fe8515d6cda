"""What every fitted reward model offers: rewards of feature vectors, one row per member."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class RewardModel(ABC):
    """K reward functions over frozen features (K = 1 for a single model)."""

    @abstractmethod
    def member_rewards(self, feats: np.ndarray) -> np.ndarray:
        """Rewards of ``feats`` [N, D]: an array [K, N], one row per member."""

    def rewards(self, feats: np.ndarray) -> np.ndarray:
        """The mean reward over members, [N]."""
        return self.member_rewards(feats).mean(axis=0)

    def p_first(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        """P(a preferred) per member, [K, N]: sigmoid(r_a - r_b) (Bradley-Terry)."""
        d = self.member_rewards(fa) - self.member_rewards(fb)
        return 1.0 / (1.0 + np.exp(-d))
