"""random: random prompts, one on-policy pair each (the baseline every arm must beat)."""

from __future__ import annotations

from typing import Sequence

from rlaif.acquisition.base import Acquisition, AcquisitionConfig, AcquisitionContext
from rlaif.types import Pair, Prompt


class RandomAcquisition(Acquisition):
    Config = AcquisitionConfig
    name = "random"

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        order = ctx.rng.permutation(len(prompts))
        chosen = [prompts[i] for i in order[:n]]
        pairs = self.sample_pairs(chosen, ctx)
        # top up with fresh prompts if identical pairs were dropped
        rest = [prompts[i] for i in order[n:]]
        while len(pairs) < n and rest:
            more, rest = rest[: n - len(pairs)], rest[n - len(pairs):]
            pairs += self.sample_pairs(more, ctx)
        for p in pairs:
            p.scores.setdefault("acq_random", 1.0)
        return pairs[:n]
