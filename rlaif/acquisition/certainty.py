"""certainty: spend labels where the policy is most confident, so the oracle can correct it.

Generate f*n random on-policy pairs (temperature 0.7), compute the implicit DPO reward of each
side under the current policy and the frozen reference,

    r(x, y) = beta * [log pi(y|x) - log pi_ref(y|x)]     (summed over completion tokens),

and keep the n pairs with the largest |r_a - r_b|. (The authors' equivalent score is
u = 1 - 2|sigmoid(r_a - r_b) - 1/2|, lowest kept.) The policy log-probs come free with
sampling; the reference log-probs cost one forward pass per new completion, cached for the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from rlaif.acquisition.base import (Acquisition, AcquisitionConfig, AcquisitionContext, score_pairs,
                                    shuffled_pool)
from rlaif.types import Pair, Prompt


@dataclass
class CertaintyConfig(AcquisitionConfig):
    f: int = field(default=32, metadata={"help": "pair over-generation: f*n candidate pairs, keep n"})


class CertaintyAcquisition(Acquisition):
    Config = CertaintyConfig
    name = "certainty"
    keep_largest: ClassVar[bool] = True  # uncertainty keeps the smallest |r_a - r_b|

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        cfg: CertaintyConfig = self.cfg
        # 1. f*n random pairs (one per prompt; a prompt whose pair stayed identical is replaced)
        order = shuffled_pool(prompts, cfg.f * n, ctx, self.name, "candidate pairs (one per prompt)")
        candidates = self.pairs_down_ranking(order, cfg.f * n, ctx)
        # 2. implicit rewards; keep the n most (or least) certain
        certainty = score_pairs(candidates, ctx)
        self.last = {"candidates": candidates}
        pairs = [candidates[i] for i in self.ranked(certainty, largest=self.keep_largest)[:n]]
        self.warn_short(len(pairs), n, f"{len(candidates)} candidate pairs")
        return pairs
