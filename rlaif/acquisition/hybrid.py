"""hybrid (the paper's proposal): the entropy filter on prompts, then the certainty filter on pairs.

1. Score n*f*k random prompts by entropy, H(x) = -(1/N) sum_n log pi(y_n|x) over each prompt's
   own N samples at temperature 1.0; keep the top n*f prompts.
2. Make one on-policy pair (temperature 0.7) for each kept prompt.
3. Score each pair by its implicit rewards r = beta*[log pi - log pi_ref]; keep the n pairs with
   the largest |r_a - r_b|.

At the IMDB settings (N=8, k=8, f=32) that is n*f*k*N + 2*n*f ~= 2,100 generations per acquired
label -- the cost ``hybrid_reuse`` cuts by pairing the entropy samples themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rlaif.acquisition.base import (Acquisition, AcquisitionConfig, AcquisitionContext, draw_prompts,
                                    prompt_entropies, score_pairs)
from rlaif.types import Pair, Prompt


@dataclass
class HybridConfig(AcquisitionConfig):
    n_samples: int = field(default=8, metadata={"help": "N: samples per prompt for the entropy estimate"})
    entropy_temperature: float = field(default=1.0, metadata={
        "help": "temperature of the entropy samples; 1.0 makes the estimate the policy's own entropy"})
    k: int = field(default=8, metadata={"help": "prompt over-sampling: score n*f*k prompts, keep n*f"})
    f: int = field(default=32, metadata={"help": "pair over-generation: n*f pairs, keep the n most certain"})


class HybridAcquisition(Acquisition):
    Config = HybridConfig
    name = "hybrid"

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        cfg: HybridConfig = self.cfg
        # 1. entropy filter: n*f*k prompts scored, the n*f most uncertain kept
        candidates = draw_prompts(prompts, n * cfg.f * cfg.k, ctx, self.name)
        entropy, _ = prompt_entropies(candidates, ctx, cfg.n_samples, cfg.entropy_temperature)
        by_entropy = [candidates[i] for i in self.ranked(entropy)]
        h = {p.id: float(e) for p, e in zip(candidates, entropy)}
        self.last = {"entropy": h, "candidates": []}
        # 2. one pair per kept prompt (the next prompt down the ranking replaces a dropped pair)
        pairs = self.pairs_down_ranking(by_entropy, n * cfg.f, ctx)
        for p in pairs:
            p.scores["entropy"] = h[p.prompt.id]
        # 3. certainty filter: the n pairs with the largest |r_a - r_b|
        certainty = score_pairs(pairs, ctx)
        self.last["candidates"] = pairs
        kept = [pairs[i] for i in self.ranked(certainty)[:n]]
        self.warn_short(len(kept), n, f"{len(candidates)} candidate prompts, {len(pairs)} candidate pairs")
        return kept
