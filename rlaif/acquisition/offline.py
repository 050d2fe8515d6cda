"""offline: pairs sampled from the frozen reference model, not from the policy being trained.

The classic non-active baseline: the same data whatever the policy learns. Before round 1 the
loop calls ``prepare()`` while the policy still equals the reference; the arm then draws random
prompts and samples enough reference pairs (temperature 0.7) for the whole label budget, plus a
spare fraction for pairs the oracle leaves undecided. Each round hands out the next banked pairs
whose prompt is still in the pool.

Where the loop provides ``ctx.reference_generator`` (a generator serving the reference weights),
nothing is banked: pairs are sampled from it as needed. Once the bank runs dry the arm samples
from the reference through ``ctx.reference_generator``, or through the policy's generator with
``source="reference"`` where that generator can (the HF generator samples from the frozen
reference with the adapter disabled); otherwise it stops with an error rather than silently
sampling from the policy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rlaif.acquisition.base import Acquisition, AcquisitionConfig, AcquisitionContext, shuffled_pool
from rlaif.types import Pair, Prompt

log = logging.getLogger(__name__)


@dataclass
class OfflineConfig(AcquisitionConfig):
    spare: float = field(default=0.25, metadata={
        "help": "extra fraction of pairs banked beyond the label budget (refills for ties / invalid labels)"})
    bank_pairs: Optional[int] = field(default=None, metadata={
        "help": "pairs to bank in prepare() when the run has no label budget (default: none banked)"})


def samples_reference(generator: Any) -> bool:
    """Whether ``generator.sample(..., source='reference')`` really samples the frozen reference."""
    flag = getattr(generator, "samples_reference", None)
    return bool(flag) if flag is not None else getattr(generator, "name", "") == "hf"


class OfflineAcquisition(Acquisition):
    Config = OfflineConfig
    name = "offline"

    def __init__(self, cfg: OfflineConfig, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.bank: list[Pair] = []
        self.prepared = False

    def prepare(self, prompts: Sequence[Prompt], budget_labels: int | None, ctx: AcquisitionContext) -> None:
        cfg: OfflineConfig = self.cfg
        self.prepared = True
        if ctx.reference_generator is not None:
            return  # sample lazily from the reference generator: nothing to bank
        want = cfg.bank_pairs if budget_labels is None else math.ceil(budget_labels * (1 + cfg.spare))
        if not want:
            log.warning("offline: no label budget and no bank_pairs; pairs will be sampled on demand")
            return
        order = shuffled_pool(prompts, want, ctx, self.name, "reference pairs (one per prompt)")
        # the policy equals the reference now: sample from it (source marks them as reference pairs)
        self.bank = self.pairs_down_ranking(order, want, ctx, source="reference")
        log.info("offline: banked %d reference pairs for a budget of %s labels", len(self.bank), budget_labels)

    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        if not self.prepared and ctx.reference_generator is None and not samples_reference(ctx.generator):
            raise RuntimeError("offline: prepare() was not called before round 1 and no reference generator "
                               "is available, so reference pairs cannot be sampled")
        # 1. the banked reference pairs whose prompt is still unused
        pool = {p.id for p in prompts}
        take = [pair for pair in self.bank if pair.prompt.id in pool][:n]
        taken = {id(p) for p in take}
        self.bank = [p for p in self.bank if id(p) not in taken]
        pairs = []
        for pair in take:
            pair.round = ctx.round
            pairs.append(pair)
        # 2. if the bank ran dry, fresh reference pairs on other prompts
        if len(pairs) < n:
            pairs += self._sample_reference(prompts, n - len(pairs), {p.prompt.id for p in pairs}, ctx)
        self.warn_short(len(pairs), n, "prompt pool exhausted")
        return pairs

    def _sample_reference(self, prompts: Sequence[Prompt], n: int, exclude: set[str],
                          ctx: AcquisitionContext) -> list[Pair]:
        if ctx.reference_generator is not None:
            gen = ctx.reference_generator
        elif samples_reference(ctx.generator):
            gen = ctx.generator
        else:
            raise RuntimeError(f"offline: the bank of reference pairs is exhausted ({n} more needed) and "
                               f"{type(ctx.generator).__name__} cannot sample the reference; raise "
                               "acquisition.spare / bank_pairs or provide a reference generator")
        if self.prepared and ctx.reference_generator is None:
            log.info("offline: bank exhausted, sampling %d more reference pairs", n)
        rest = [p for p in prompts if p.id not in exclude]
        order = shuffled_pool(rest, n, ctx, self.name, "reference pairs (one per prompt)")
        return self.pairs_down_ranking(order, n, ctx, generator=gen, source="reference")
