"""fitted_rm: a reward model fitted on bought labels (``rlaif fit-rm``, or a run's ``rm/round-<r>/``) as a free judge.

P(a) = sigmoid(r_a - r_b). For an ensemble r is the mean over its heads, on the frozen features it
was fitted on (its ``rm.json`` names the feature model, layer and pooling); for a model trained by
``--trainer trl`` it is the model's score of the text its ``rm.json`` names (prompt + completion).
|r_a - r_b| within ``tie_margin`` is a tie. A reward model has no position bias: ``swap_p`` defaults to 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rlaif.oracle.base import Oracle, OracleConfig, OracleError
from rlaif.types import Label, Outcome, Pair


@dataclass
class FittedRMConfig(OracleConfig):
    path: str = field(default="", metadata={
        "help": "the directory rlaif fit-rm wrote (rm.json with ensemble.pt or a TRL model), or a run's rm/round-<r>"})
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
        self._gaps = None

    def identity(self) -> dict:
        out = {**super().identity(), "ensemble": _digest(Path(self.cfg.path) / "ensemble.pt"),
               "tie_margin": self.cfg.tie_margin}
        model = _digest(Path(self.cfg.path) / "model.safetensors")  # a TRL model (none beside an ensemble)
        return {**out, "model": model} if model else out

    def _load(self) -> Callable[[Sequence[Pair]], list[float]]:
        if self._gaps is None:
            if not self.cfg.path:
                raise OracleError("oracle=fitted_rm needs oracle.path=DIR (a directory rlaif fit-rm wrote)")
            try:
                self._gaps = reward_gaps(self.cfg.path)
            except FileNotFoundError as e:
                raise OracleError(str(e)) from e
        return self._gaps

    async def setup(self) -> None:
        await asyncio.to_thread(self._load)

    def reward_gaps(self, pairs: Sequence[Pair]) -> list[float]:
        """r(a) - r(b) per pair (an ensemble's: the mean over its heads)."""
        return self._load()(pairs)

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        gaps = await asyncio.to_thread(self.reward_gaps, shown)
        out = []
        for d in gaps:
            outcome = Outcome.TIE if abs(d) <= self.cfg.tie_margin else (Outcome.A if d > 0 else Outcome.B)
            out.append(Label(outcome=outcome, p_a=_sigmoid(d), raw=f"r_a-r_b={d:.6f}",
                             judge=self.name))
        return out


def reward_gaps(path: str | Path) -> Callable[[Sequence[Pair]], list[float]]:
    """``gaps(pairs)``: r(a) - r(b) per pair under the reward model in ``path``, whichever trainer of
    ``rlaif fit-rm`` made it (its rm.json says): the ensemble's mean reward over the frozen features
    it names, or the TRL model's score of the text it names."""
    meta_file = Path(path) / "rm.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if meta.get("trainer") == "trl":
        from rlaif.reward.trl_rm import text_scorer

        return text_scorer(path, meta)
    from rlaif.reward.fit import load_rm

    ens, fx, _ = load_rm(path)

    def gaps(pairs: Sequence[Pair]) -> list[float]:
        r = ens.rewards(fx([c for p in pairs for c in (p.a, p.b)]))
        return [float(r[2 * i] - r[2 * i + 1]) for i in range(len(pairs))]

    return gaps


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def _sigmoid(d: float) -> float:
    """1 / (1 + e^-d) without overflow for any gap (a whole model's scores are unbounded)."""
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
