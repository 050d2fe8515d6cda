"""hybrid_reuse: hybrid without the second round of sampling -- pair the entropy samples themselves.

1. Score n*p*k random prompts by entropy from their own N samples (temperature 1.0), exactly as
   ``entropy``/``hybrid`` do; keep the top n*p prompts (p = ``prompts_per_label``).
2. Candidate pairs are the N(N-1)/2 pairs of each kept prompt's N samples (identical completions
   dropped): no further generation. Their policy log-probs are already known from sampling;
   only the reference log-probs cost a forward pass (one per sample, cached).
3. Keep the n most certain pairs (largest |r_a - r_b|), at most ``max_pairs_per_prompt`` per
   prompt. Should too few survive, the next prompts down the entropy ranking (already sampled)
   are paired too.

Generations per acquired label: p*k*N (256 at the defaults p=4, k=8, N=8), against hybrid's
f*k*N + 2f (2,112 at f=32). Unlike the paper's pairs, these completions are temperature-1.0
samples (the entropy samples), not temperature-0.7 ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Sequence

from rlaif.acquisition.base import (Acquisition, AcquisitionConfig, AcquisitionContext, draw_prompts,
                                    prompt_entropies, score_pairs)
from rlaif.types import Completion, Pair, Prompt


@dataclass
class HybridReuseConfig(AcquisitionConfig):
    n_samples: int = field(default=8, metadata={
        "help": "N: samples per prompt, for the entropy estimate and as pair candidates (N(N-1)/2 pairs)"})
    entropy_temperature: float = field(default=1.0, metadata={
        "help": "temperature of the samples (entropy estimate and pairs); 1.0 = the policy's own entropy"})
    k: int = field(default=8, metadata={"help": "prompt over-sampling: score n*p*k prompts, keep the top n*p"})
    prompts_per_label: int = field(default=4, metadata={
        "help": "p: top-entropy prompts kept per acquired label as sources of candidate pairs"})
    max_pairs_per_prompt: int = field(default=1, metadata={
        "help": "at most this many acquired pairs share one prompt (1 = one pair per prompt, as the paper)"})


def candidate_pairs(prompt: Prompt, samples: Sequence[Completion], round_: int, drop_identical: bool) -> list[Pair]:
    """All N(N-1)/2 pairs of one prompt's samples; pairs of the same two texts appear once."""
    out, seen = [], set()
    for a, b in combinations(samples, 2):
        if drop_identical and a.token_ids == b.token_ids:
            continue
        key = tuple(sorted((a.token_ids, b.token_ids)))
        if key in seen:
            continue
        seen.add(key)
        out.append(Pair(prompt, a, b, round=round_))
    return out


class HybridReuseAcquisition(Acquisition):
    Config = HybridReuseConfig
    name = "hybrid_reuse"

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        cfg: HybridReuseConfig = self.cfg
        if cfg.n_samples < 2:
            raise ValueError("hybrid_reuse needs n_samples >= 2 to build pairs from the samples")
        per_prompt = max(1, cfg.max_pairs_per_prompt)
        # 1. entropy of n*p*k prompts from their own N samples
        candidates = draw_prompts(prompts, n * cfg.prompts_per_label * cfg.k, ctx, self.name)
        entropy, samples = prompt_entropies(candidates, ctx, cfg.n_samples, cfg.entropy_temperature)
        order = self.ranked(entropy)
        h = {p.id: float(e) for p, e in zip(candidates, entropy)}
        self.last = {"entropy": h, "candidates": []}
        # 2-3. pair the samples of the top prompts, keep the most certain; widen if too few survive
        kept: list[Pair] = []
        used: dict[str, int] = {}
        pos, width = 0, n * cfg.prompts_per_label
        while len(kept) < n and pos < len(order):
            batch = order[pos:pos + width]
            pos += len(batch)
            pool = [pair for i in batch
                    for pair in candidate_pairs(candidates[i], samples[i], ctx.round, self.cfg.drop_identical)]
            certainty = score_pairs(pool, ctx)
            self.last["candidates"] += pool
            for j in self.ranked(certainty):
                pair = pool[j]
                if used.get(pair.prompt.id, 0) >= per_prompt:
                    continue
                used[pair.prompt.id] = used.get(pair.prompt.id, 0) + 1
                pair.scores["entropy"] = h[pair.prompt.id]
                kept.append(pair)
                if len(kept) == n:
                    break
            width = max(1, n - len(kept))  # next prompts down the ranking, as few as needed
        self.warn_short(len(kept), n, f"{len(candidates)} candidate prompts")
        return kept
