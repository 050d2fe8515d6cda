"""Acquisition: choose which pairs are worth paying the oracle for.

One file per arm (``random.py``, ``entropy.py``, ``certainty.py``, ...); ``conf/acquisition/``
uses the same names. An arm gets a pool of unused prompts and the number of labels wanted this
round, and returns that many pairs, each with the scores it used (so reports can characterise
what each arm bought).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from rlaif.types import Completion, Pair, Prompt

if TYPE_CHECKING:
    from rlaif.generator.base import Generator, SamplingParams


@dataclass
class AcquisitionConfig:
    """Fields every arm has. Arms subclass this dataclass."""

    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the pair completions"})
    top_p: float = 1.0
    top_k: int = 0
    drop_identical: bool = field(default=True, metadata={
        "help": "never acquire a pair whose two completions are identical (a wasted label)"})
    max_tries: int = field(default=3, metadata={"help": "resampling rounds to replace identical pairs"})


@dataclass
class StageStats:
    generations: int = 0  # completions sampled
    tokens: int = 0  # completion tokens generated
    scored: int = 0  # sequences scored by an extra forward pass
    seconds: float = 0.0


class ComputeStats:
    """Per-stage compute of one acquisition round (prompt scoring, pair generation, pair scoring)."""

    def __init__(self) -> None:
        self.stages: dict[str, StageStats] = defaultdict(StageStats)

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield self.stages[name]
        finally:
            self.stages[name].seconds += time.perf_counter() - t

    def add_samples(self, name: str, samples: Sequence[Sequence[Completion]]) -> None:
        s = self.stages[name]
        for group in samples:
            s.generations += len(group)
            s.tokens += sum(c.num_tokens for c in group)

    def totals(self) -> StageStats:
        t = StageStats()
        for s in self.stages.values():
            t.generations += s.generations
            t.tokens += s.tokens
            t.scored += s.scored
            t.seconds += s.seconds
        return t

    def as_dict(self) -> dict:
        return {k: vars(v) for k, v in self.stages.items()}


@dataclass
class AcquisitionContext:
    """What an arm may use: the current policy's generator, the cached reference scorer, an RNG."""

    generator: "Generator"
    reference_logprobs: Callable[[Sequence[Completion]], list[float]]
    rng: np.random.Generator
    beta: float
    max_new_tokens: int
    min_new_tokens: int
    round: int = 0
    seed: int = 0
    stats: ComputeStats = field(default_factory=ComputeStats)
    reference_generator: Any = None  # samples from the frozen reference (offline arm)

    def sampling(self, n: int, temperature: float, top_p: float = 1.0, top_k: int = 0) -> "SamplingParams":
        from rlaif.generator.base import SamplingParams

        return SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                              max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                              seed=int(self.rng.integers(2**31)))

    def implicit_rewards(self, completions: Sequence[Completion]) -> list[float]:
        """r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed over completion tokens."""
        missing = [c for c in completions if c.logprob is None]
        if missing:
            with self.stats.stage("pair_scoring") as st:
                vals = self.generator.score(missing)
                st.scored += len(missing)
            lp = dict(zip((c.key for c in missing), vals))
        else:
            lp = {}
        ref = self.reference_logprobs(completions)
        return [self.beta * ((c.logprob if c.logprob is not None else lp[c.key]) - r)
                for c, r in zip(completions, ref)]


class Acquisition(ABC):
    Config: ClassVar[type] = AcquisitionConfig
    name: ClassVar[str] = "base"

    def __init__(self, cfg: AcquisitionConfig, **_: Any) -> None:
        self.cfg = cfg

    def prepare(self, prompts: Sequence[Prompt], budget_labels: int | None, ctx: AcquisitionContext) -> None:
        """Called once before round 1, while the policy still equals the reference."""

    @abstractmethod
    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        """Return ``n`` pairs (fewer only if the prompt pool runs out) drawn from ``prompts``."""

    # -- shared helpers ------------------------------------------------------------------------
    def pairs_from_samples(self, prompts: Sequence[Prompt], samples: Sequence[Sequence[Completion]],
                           round_: int) -> list[Pair]:
        """One pair per prompt from its first two samples (identical pairs skipped if configured)."""
        out = []
        for p, group in zip(prompts, samples):
            if len(group) < 2:
                continue
            pair = Pair(p, group[0], group[1], round=round_)
            if self.cfg.drop_identical and pair.identical:
                continue
            out.append(pair)
        return out

    def sample_pairs(self, prompts: Sequence[Prompt], ctx: AcquisitionContext, stage: str = "pair_generation",
                     temperature: float | None = None) -> list[Pair]:
        """Sample one pair per prompt; resample identical pairs up to ``max_tries`` times."""
        params = ctx.sampling(2, self.cfg.temperature if temperature is None else temperature,
                              self.cfg.top_p, self.cfg.top_k)
        pending, got = list(prompts), {}
        for _ in range(max(1, self.cfg.max_tries)):
            with ctx.stats.stage(stage):
                samples = ctx.generator.sample(pending, params)
            ctx.stats.add_samples(stage, samples)
            for p, pair in zip(pending, [Pair(p, s[0], s[1], round=ctx.round) for p, s in zip(pending, samples)]):
                if not (self.cfg.drop_identical and pair.identical):
                    got[p.id] = pair
            pending = [p for p in pending if p.id not in got]
            if not pending or not self.cfg.drop_identical:
                break
            params = ctx.sampling(2, params.temperature, params.top_p, params.top_k)
        return [got[p.id] for p in prompts if p.id in got]
