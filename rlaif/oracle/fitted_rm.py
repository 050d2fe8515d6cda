"""fitted_rm: a reward-model ensemble fitted on bought labels (``rlaif fit-rm``) as a free judge.

P(a) = sigmoid(mean_k r_k(a) - mean_k r_k(b)) over the ensemble's heads, on the frozen features it
was fitted on (its ``rm.json`` names the feature model, layer and pooling); |r_a - r_b| within
``tie_margin`` is a tie. A reward model has no position bias: ``swap_p`` defaults to 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rlaif.oracle.base import Oracle, OracleConfig, OracleError
from rlaif.types import Label, Outcome, Pair


@dataclass
class FittedRMConfig(OracleConfig):
    path: str = field(default="", metadata={"help": "the directory rlaif fit-rm wrote (ensemble.pt + rm.json)"})
    tie_margin: float = field(default=0.0, metadata={"help": "|r_a - r_b| <= margin is a tie"})
    swap_p: float = field(default=0.0, metadata={"help": "probability of showing the pair swapped (no effect)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per call of judge_shown"})


class FittedRMOracle(Oracle):
    Config = FittedRMConfig
    kind = "fitted_rm"
    free = True

    def __init__(self, cfg: FittedRMConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        self.name = cfg.name or f"fitted_rm:{Path(cfg.path).name or cfg.path}"
        self._rm = None

    def identity(self) -> dict:
        state = Path(self.cfg.path) / "ensemble.pt"
        digest = hashlib.sha256(state.read_bytes()).hexdigest()[:16] if state.exists() else None
        return {**super().identity(), "ensemble": digest, "tie_margin": self.cfg.tie_margin}

    def _load(self):
        if self._rm is None:
            from rlaif.reward.fit import load_rm

            if not self.cfg.path:
                raise OracleError("oracle=fitted_rm needs oracle.path=DIR (a directory rlaif fit-rm wrote)")
            try:
                self._rm = load_rm(self.cfg.path)[:2]
            except FileNotFoundError as e:
                raise OracleError(str(e)) from e
        return self._rm

    async def setup(self) -> None:
        await asyncio.to_thread(self._load)

    def reward_gaps(self, pairs: Sequence[Pair]) -> list[float]:
        """mean r(a) - mean r(b) per pair."""
        ens, fx = self._load()
        feats = fx([c for p in pairs for c in (p.a, p.b)])
        r = ens.rewards(feats)
        return [float(r[2 * i] - r[2 * i + 1]) for i in range(len(pairs))]

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        gaps = await asyncio.to_thread(self.reward_gaps, shown)
        out = []
        for d in gaps:
            outcome = Outcome.TIE if abs(d) <= self.cfg.tie_margin else (Outcome.A if d > 0 else Outcome.B)
            out.append(Label(outcome=outcome, p_a=1.0 / (1.0 + math.exp(-d)), raw=f"r_a-r_b={d:.6f}",
                             judge=self.name))
        return out
