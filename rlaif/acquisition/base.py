"""Acquisition: choose which pairs are worth paying the oracle for.

One file per arm (``random.py``, ``entropy.py``, ``certainty.py``, ...); ``conf/acquisition/``
uses the same names. An arm gets a pool of unused prompts and the number of labels wanted this
round, and returns that many pairs, each with the scores it used (so reports can characterise
what each arm bought).
"""

from __future__ import annotations

import dataclasses
import logging
import math
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

log = logging.getLogger(__name__)


@dataclass
class AcquisitionConfig:
    """Fields every arm has. Arms subclass this dataclass."""

    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the pair completions"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of the pair completions (1.0: off)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling of the pair completions (0: off)"})
    tolerance: float = field(default=1e-2, metadata={
        "help": "scores (entropy in nats, certainty in reward units) closer than this rank as ties, broken "
                "by the seeded order: vLLM's and transformers' log-probs of the same tokens differ by "
                "~1e-4 per sequence and threads / batching move them by ~1e-5, noise that must not select"})
    drop_identical: bool = field(default=True, metadata={
        "help": "never acquire a pair whose two completions are identical (a wasted label)"})
    max_tries: int = field(default=3, metadata={"help": "resampling rounds to replace identical pairs"})


@dataclass
class StageStats:
    generations: int = 0  # completions sampled
    tokens: int = 0  # completion tokens generated
    scored: int = 0  # sequences scored by an extra forward pass (policy or reference)
    seconds: float = 0.0
    ref_scored: int = 0  # of ``scored``: reference forward passes (reference-cache misses)
    ref_cache_hits: int = 0  # reference log-probs answered from the cache (no forward pass)


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
            t.ref_scored += s.ref_scored
            t.ref_cache_hits += s.ref_cache_hits
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
    # the run's decisive labels so far, as (Pair, Label) in acquisition order (the epistemic arms refit on them)
    preferences: Sequence[tuple[Pair, Any]] = ()

    def sampling(self, n: int, temperature: float, top_p: float = 1.0, top_k: int = 0) -> "SamplingParams":
        from rlaif.generator.base import SamplingParams

        return SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                              max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                              seed=int(self.rng.integers(2**31)))

    def policy_logprobs(self, completions: Sequence[Completion], stage: str = "pair_scoring") -> list[float]:
        """log pi(y|x) under the current policy: free from sampling, else one counted forward pass."""
        missing = list({c.key: c for c in completions if c.logprob is None}.values())
        lp: dict[str, float] = {}
        if missing:
            with self.stats.stage(stage) as st:
                lp = dict(zip((c.key for c in missing), self.generator.score(missing)))
                st.scored += len(missing)
        return [c.logprob if c.logprob is not None else lp[c.key] for c in completions]

    def reference_logprobs_counted(self, completions: Sequence[Completion],
                                   stage: str = "pair_scoring") -> list[float]:
        """log pi_ref(y|x) through the cached scorer, counting forward passes and cache hits."""
        uniq = len({c.key for c in completions})
        before = getattr(self.reference_logprobs, "passes", None)
        with self.stats.stage(stage) as st:
            vals = self.reference_logprobs(completions)
            after = getattr(self.reference_logprobs, "passes", None)
            # a scorer without a ``passes`` counter is counted as if nothing were cached
            misses = uniq if before is None or after is None else after - before
            st.scored += misses
            st.ref_scored += misses
            st.ref_cache_hits += len(completions) - misses
        return list(vals)

    def implicit_rewards(self, completions: Sequence[Completion], stage: str = "pair_scoring") -> list[float]:
        """r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed over completion tokens.

        While the policy's weights are the reference's (round 1), every reward is exactly 0 and
        nothing is computed: the policy's log-probs come from the generator (vLLM) and the
        reference's from transformers, and their ~1e-5 disagreement must never rank pairs.
        """
        if self.generator.is_reference():
            return [0.0] * len(completions)
        pol = self.policy_logprobs(completions, stage)
        ref = self.reference_logprobs_counted(completions, stage)
        return [self.beta * (p - r) for p, r in zip(pol, ref)]


# ---------------------------------------------------------------------------------------------
# Shared measurements and selection steps (used by every arm, each in its own file)
# ---------------------------------------------------------------------------------------------

def entropy_estimate(own_samples: Sequence[Completion]) -> float:
    """H(x) ~= -(1/N) sum_n log pi(y_n|x), over the N samples *of this prompt* (y_n ~ pi(.|x)).

    Log-probs are summed over completion tokens, not length-normalised (APL.md). The samples
    must all continue the same prompt: averaging samples of other prompts (the released code's
    sliding window) is exactly the defect this function exists to avoid.
    """
    if not own_samples:
        raise ValueError("entropy_estimate needs at least one sample")
    ids = own_samples[0].prompt.token_ids
    if any(c.prompt.token_ids != ids for c in own_samples):
        raise ValueError("entropy_estimate: samples of different prompts were mixed")
    if any(c.logprob is None for c in own_samples):
        raise ValueError("entropy_estimate: a sample has no log-prob (score it first)")
    return -float(np.mean([c.logprob for c in own_samples]))


def prompt_entropies(prompts: Sequence[Prompt], ctx: AcquisitionContext, n_samples: int,
                     temperature: float = 1.0, stage: str = "prompt_scoring"
                     ) -> tuple[np.ndarray, list[list[Completion]]]:
    """Sample ``n_samples`` completions per prompt and estimate each prompt's entropy from its own.

    Returns (entropies, samples), aligned with ``prompts``. Samples that came back without a
    log-prob are scored under the policy (counted as ``scored`` in ``stage``).
    """
    if not prompts:
        return np.zeros(0), []
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    with ctx.stats.stage(stage):
        samples = ctx.generator.sample(list(prompts), ctx.sampling(n_samples, temperature))
    ctx.stats.add_samples(stage, samples)
    if len(samples) != len(prompts):
        raise RuntimeError(f"generator returned {len(samples)} sample groups for {len(prompts)} prompts")
    flat = [c for g in samples for c in g]
    if any(c.logprob is None for c in flat):
        lps = ctx.policy_logprobs(flat, stage)
        it = iter(lps)
        samples = [[dataclasses.replace(c, logprob=next(it)) for c in g] for g in samples]
    for p, g in zip(prompts, samples):
        if len(g) != n_samples or any(c.prompt.token_ids != p.token_ids for c in g):
            raise RuntimeError(f"generator returned samples that do not belong to prompt {p.id!r}")
    return np.array([entropy_estimate(g) for g in samples], dtype=float), samples


def score_pairs(pairs: Sequence[Pair], ctx: AcquisitionContext, stage: str = "pair_scoring") -> np.ndarray:
    """Implicit rewards of both sides of every pair; record r_a, r_b, certainty, policy_p_a.

    certainty = |r_a - r_b|; policy_p_a = sigmoid(r_a - r_b), the policy's own preference for a
    (the paper's equivalent uncertainty score is u = 1 - 2|policy_p_a - 1/2|). One batched call:
    every completion's reference log-prob is computed at most once (and cached for the run).
    """
    if not pairs:
        return np.zeros(0)
    comps = [c for p in pairs for c in (p.a, p.b)]
    r = ctx.implicit_rewards(comps, stage)
    cert = np.empty(len(pairs))
    for i, p in enumerate(pairs):
        ra, rb = r[2 * i], r[2 * i + 1]
        cert[i] = abs(ra - rb)
        p.scores.update(r_a=float(ra), r_b=float(rb), certainty=float(cert[i]),
                        policy_p_a=float(1.0 / (1.0 + math.exp(-(ra - rb)))))
    return cert


def ranked(scores: Sequence[float], largest: bool = True, tolerance: float = 0.0) -> list[int]:
    """Indices from best to worst; ties keep their original (seeded, random) order.

    Scores are compared on a grid of ``tolerance`` (``AcquisitionConfig.tolerance``), so two runs
    whose log-probs differ by numerical noise below it (thread count, batching, vLLM vs
    transformers) select the same pairs. The guarantee is not absolute: a score within noise of a
    grid boundary can still land on either side, which changes a selection only when it sits at
    the cut-off next to a rival less than one grid step away.
    """
    s = np.asarray(scores, dtype=float)
    if tolerance > 0:
        s = np.round(s / tolerance)
    return [int(i) for i in np.argsort(-s if largest else s, kind="stable")]


def shuffled_pool(prompts: Sequence[Prompt], m: int, ctx: AcquisitionContext, arm: str,
                  what: str = "candidate prompts") -> list[Prompt]:
    """The whole pool in a seeded random order; warns when the ``m`` wanted exceed the pool."""
    if m > len(prompts):
        log.warning("%s: wanted %d %s but the pool has only %d prompts; using all of them",
                    arm, m, what, len(prompts))
    return [prompts[i] for i in ctx.rng.permutation(len(prompts))]


def draw_prompts(prompts: Sequence[Prompt], m: int, ctx: AcquisitionContext, arm: str,
                 what: str = "candidate prompts") -> list[Prompt]:
    """``m`` distinct prompts at random from the pool (all of them, with a warning, if fewer)."""
    return shuffled_pool(prompts, m, ctx, arm, what)[:m]


class Acquisition(ABC):
    Config: ClassVar[type] = AcquisitionConfig
    name: ClassVar[str] = "base"

    def __init__(self, cfg: AcquisitionConfig, **_: Any) -> None:
        self.cfg = cfg
        # what the last select() measured, for tests and benchmarks: 'entropy' {prompt id: H} of
        # every prompt scored, 'candidates' [every candidate pair, with its scores]
        self.last: dict[str, Any] = {}

    def prepare(self, prompts: Sequence[Prompt], budget_labels: int | None, ctx: AcquisitionContext) -> None:
        """Called once before round 1, while the policy still equals the reference."""

    @abstractmethod
    def select(self, prompts: Sequence[Prompt], n: int, ctx: AcquisitionContext) -> list[Pair]:
        """Return ``n`` pairs (fewer only if the prompt pool runs out) drawn from ``prompts``."""

    # -- shared helpers ------------------------------------------------------------------------
    def ranked(self, scores: Sequence[float], largest: bool = True) -> list[int]:
        """:func:`ranked` at this arm's ``tolerance``: noise below it never decides a selection."""
        return ranked(scores, largest, self.cfg.tolerance)

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
                     temperature: float | None = None, generator: "Generator | None" = None,
                     source: str = "policy") -> list[Pair]:
        """Sample one pair per prompt; resample identical pairs up to ``max_tries`` times.

        ``generator`` / ``source`` default to the current policy (``ctx.generator``); the offline
        arm passes the reference's.
        """
        gen = ctx.generator if generator is None else generator
        params = ctx.sampling(2, self.cfg.temperature if temperature is None else temperature,
                              self.cfg.top_p, self.cfg.top_k)
        pending, got = list(prompts), {}
        for _ in range(max(1, self.cfg.max_tries)):
            if not pending:
                break
            with ctx.stats.stage(stage):
                samples = (gen.sample(pending, params) if source == "policy"
                           else gen.sample(pending, params, source=source))
            ctx.stats.add_samples(stage, samples)
            for p, pair in zip(pending, [Pair(p, s[0], s[1], round=ctx.round) for p, s in zip(pending, samples)]):
                if not (self.cfg.drop_identical and pair.identical):
                    got[p.id] = pair
            pending = [p for p in pending if p.id not in got]
            if not pending or not self.cfg.drop_identical:
                break
            params = ctx.sampling(2, params.temperature, params.top_p, params.top_k)
        return [got[p.id] for p in prompts if p.id in got]

    def pairs_down_ranking(self, ranking: Sequence[Prompt], n: int, ctx: AcquisitionContext, **kw: Any) -> list[Pair]:
        """One pair each for the first ``n`` prompts of ``ranking``; a prompt whose pairs stayed
        identical (dropped) is replaced by the next prompt down the ranking."""
        pairs: list[Pair] = []
        pos = 0
        while len(pairs) < n and pos < len(ranking):
            take = list(ranking[pos:pos + n - len(pairs)])
            pos += len(take)
            pairs += self.sample_pairs(take, ctx, **kw)
        return pairs

    def warn_short(self, got: int, n: int, why: str) -> None:
        """Say so when an arm returns fewer pairs than asked (never fall short silently)."""
        if got < n:
            log.warning("%s: returning %d of the %d pairs asked for (%s)", self.name, got, n, why)
