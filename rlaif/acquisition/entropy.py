"""entropy: spend labels on the prompts the policy is least sure how to continue.

For each of k*n random candidate prompts, draw N samples y_n ~ pi(.|x) at temperature 1.0 and
estimate the predictive entropy from that prompt's own samples,

    H(x) = -(1/N) sum_n log pi(y_n|x)      (log-probs summed over completion tokens),

keep the n prompts with the highest H, and make one on-policy pair (temperature 0.7) for each.
The log-prob of every sample comes free with generation, so scoring costs no forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rlaif.acquisition.base import (Acquisition, AcquisitionConfig, AcquisitionContext, draw_prompts,
                                    prompt_entropies)
from rlaif.types import Pair, Prompt


@dataclass
class EntropyConfig(AcquisitionConfig):
    n_samples: int = field(default=8, metadata={"help": "N: samples per prompt for the entropy estimate"})
    entropy_temperature: float = field(default=1.0, metadata={
        "help": "temperature of the entropy samples; 1.0 makes the estimate the policy's own entropy"})
    k: int = field(default=8, metadata={"help": "prompt over-sampling: score k*n prompts, keep the top n"})


class EntropyAcquisition(Acquisition):
    Config = EntropyConfig
    name = "entropy"

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        cfg: EntropyConfig = self.cfg
        # 1. score k*n random prompts by the entropy of their own N samples
        candidates = draw_prompts(prompts, cfg.k * n, ctx, self.name)
        entropy, _ = prompt_entropies(candidates, ctx, cfg.n_samples, cfg.entropy_temperature)
        by_entropy = [candidates[i] for i in self.ranked(entropy)]
        h = {p.id: float(e) for p, e in zip(candidates, entropy)}
        self.last = {"entropy": h}
        # 2. one pair for each of the n most uncertain prompts (next ones replace dropped pairs)
        pairs = self.pairs_down_ranking(by_entropy, n, ctx)
        for p in pairs:
            p.scores["entropy"] = h[p.prompt.id]
        self.warn_short(len(pairs), n, f"{len(candidates)} candidate prompts")
        return pairs[:n]
