"""thompson: double Thompson sampling over a reward-model ensemble (SEA, arXiv 2411.01493;
Dwaracherla et al., arXiv 2402.00396), in a documented simple form.

Each round (from the second on) the ensemble is refitted on the run's decisive labels so far
(:mod:`rlaif.reward.online`). For each of n random prompts, ``n_samples`` completions are sampled
from the policy; a head is drawn uniformly from the ensemble (a posterior sample) and the
completion it rewards most becomes side a; a second head is drawn independently and its best
completion *among the others* (different tokens from a) becomes side b. Where the heads agree
the pair is the two best candidates; where they disagree it contrasts two plausible optima --
exploration exactly where the reward is uncertain.

Compute per label: ``n_samples`` completions and one feature forward pass per new completion
(``rm_features``), plus the refit (``rm_fit``). Round 1, or fewer than ``min_labels`` decisive
labels: no ensemble yet, so n random pairs (stage ``random_fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rlaif.acquisition.base import Acquisition, AcquisitionContext, shuffled_pool
from rlaif.acquisition.ensemble_uncertainty import EnsembleArmConfig, random_fallback
from rlaif.reward.ensemble import Ensemble
from rlaif.types import Completion, Pair, Prompt


@dataclass
class ThompsonConfig(EnsembleArmConfig):
    n_samples: int = field(default=8, metadata={"help": "completions sampled per prompt (the arms a and b are drawn from)"})


class ThompsonAcquisition(Acquisition):
    Config = ThompsonConfig
    name = "thompson"

    def __init__(self, cfg: ThompsonConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        if cfg.n_samples < 2:
            raise ValueError(f"acquisition.n_samples must be >= 2 for a pair, got {cfg.n_samples}")
        self.online = cfg.online()

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        ens = self.online.refit(ctx)
        if ens is None:
            return random_fallback(self, prompts, n, ctx)
        order, pairs, pos = shuffled_pool(prompts, n, ctx, self.name), [], 0
        while len(pairs) < n and pos < len(order):
            take = order[pos:pos + n - len(pairs)]
            pos += len(take)
            pairs += self._duel(take, ens, ctx)
        self.last = {"fallback": False, "candidates": list(pairs)}
        self.warn_short(len(pairs), n, "prompts whose samples were all identical")
        return pairs

    def _duel(self, prompts: Sequence[Prompt], ens: Ensemble, ctx: AcquisitionContext) -> list[Pair]:
        """One double-Thompson pair per prompt (none where every sample is the same completion)."""
        cfg: ThompsonConfig = self.cfg
        with ctx.stats.stage("pair_generation"):
            samples = ctx.generator.sample(list(prompts), ctx.sampling(cfg.n_samples, cfg.temperature,
                                                                       cfg.top_p, cfg.top_k))
        ctx.stats.add_samples("pair_generation", samples)
        rewards = ens.member_rewards(self.online.features([c for g in samples for c in g], ctx))  # [H, sum K]
        out, at = [], 0
        for p, group in zip(prompts, samples):
            r, at = rewards[:, at:at + len(group)], at + len(group)
            pair = _double_thompson(p, list(group), r, ctx.rng, ctx.round)
            if pair is not None:
                out.append(pair)
        return out


def _double_thompson(prompt: Prompt, group: list[Completion], r: np.ndarray, rng: np.random.Generator,
                     round_: int) -> Pair | None:
    """Side a: the argmax of a sampled head; side b: another sampled head's argmax among the rest."""
    h1, h2 = int(rng.integers(r.shape[0])), int(rng.integers(r.shape[0]))
    ia = int(np.argmax(r[h1]))
    rest = [i for i, c in enumerate(group) if c.token_ids != group[ia].token_ids]
    if not rest:
        return None
    ib = rest[int(np.argmax(r[h2, rest]))]
    d = r[:, ia] - r[:, ib]
    p_a = 1.0 / (1.0 + np.exp(-d))
    return Pair(prompt, group[ia], group[ib], round=round_,
                scores={"ts_head_a": float(h1), "ts_head_b": float(h2), "r_a": float(r[:, ia].mean()),
                        "r_b": float(r[:, ib].mean()), "ensemble_p_a": float(p_a.mean()),
                        "ensemble_std": float(p_a.std())})
