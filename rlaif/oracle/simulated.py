"""``simulated``: a judge with known flaws, for benchmarking acquisition and clients without paying.

Wraps any oracle (the nested ``base:`` node, built with its own ``_target_``; by default the
built-in :class:`KeywordJudge`) and, per pair, seeded from (seed, pair id) so any run order
gives the same answers:

1. fails with probability ``failure_rate`` (INVALID, reason "simulated failure");
2. otherwise answers "the first shown" with probability ``position_bias``, whatever the pair;
3. otherwise gives the base judge's answer, flipped with probability ``flip_rate``;

after a latency drawn from ``latency`` (fixed | uniform | exponential | lognormal, mean
``latency_ms``). As AlpacaFarm's simulated annotators did, the flaws are known, so a benchmark can
check that what it measures (agreement, consistency, throughput) recovers them.

:class:`KeywordJudge` is a deterministic, model-free judge (a sentiment word count, then less
repetition): free, instant, and the default answer of ``rlaif serve-judge``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rlaif.oracle.base import Oracle, OracleConfig
from rlaif.registry import ConfigError
from rlaif.types import Label, Outcome, Pair, Spend

POSITIVE = frozenset("""good great excellent amazing wonderful best love loved loves lovely brilliant superb
fantastic enjoyable enjoyed beautiful fun funny perfect masterpiece favorite favourite touching moving
delightful charming recommend impressive powerful fine nice happy memorable hilarious stunning outstanding
awesome terrific gem well better strong sweet""".split())
NEGATIVE = frozenset("""bad worst awful terrible boring horrible poor waste wasted stupid dull hate hated
annoying disappointing disappointed mess lame worse weak ridiculous pathetic unfunny pointless predictable
bland mediocre fails failed garbage trash ugly painful sadly nothing""".split())
_WORD = re.compile(r"[a-z']+")


@dataclass
class KeywordConfig(OracleConfig):
    tie_margin: float = field(default=0.0, metadata={"help": "score differences up to this are ties"})


class KeywordJudge(Oracle):
    """Prefers the text with more positive than negative words, then the one with less repetition."""

    Config = KeywordConfig
    kind = "keyword"

    @staticmethod
    def score(text: str) -> float:
        words = _WORD.findall(text.lower())
        sentiment = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        repetition = (len(words) - len(set(words))) / max(1, len(words))
        return sentiment - 0.5 * repetition

    def identity(self) -> dict:
        return {**super().identity(), "tie_margin": self.cfg.tie_margin}

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        out = []
        for p in shown:
            d = self.score(p.a.text) - self.score(p.b.text)
            outcome = Outcome.TIE if abs(d) <= self.cfg.tie_margin else (Outcome.A if d > 0 else Outcome.B)
            out.append(Label(outcome=outcome, p_a=1.0 / (1.0 + math.exp(-2.0 * d)), raw=f"score difference {d:+.3f}"))
        return out


@dataclass
class SimulatedConfig(OracleConfig):
    base: Any = field(default=None, metadata={
        "help": "the judge being simulated: a nested oracle node with _target_ (default: the keyword judge)"})
    flip_rate: float = field(default=0.0, metadata={"help": "probability of flipping a decisive answer"})
    position_bias: float = field(default=0.0, metadata={
        "help": "probability of answering 'the first shown' regardless of the pair"})
    failure_rate: float = field(default=0.0, metadata={"help": "probability of an invalid label (simulated failure)"})
    latency_ms: float = field(default=0.0, metadata={"help": "mean simulated latency per label"})
    latency: str = field(default="fixed", metadata={"help": "fixed | uniform | exponential | lognormal"})
    latency_sigma: float = field(default=0.5, metadata={"help": "lognormal shape"})
    price_per_label: float = field(default=0.0, metadata={"help": "simulated US$ per label (0: free)",
                                                          "fingerprint": False})
    batch_size: int = field(default=64, metadata={"help": "pairs per call of judge_shown"})
    concurrency: int = field(default=4, metadata={"help": "batches in flight at once", "fingerprint": False})

    def __post_init__(self) -> None:
        for name in ("flip_rate", "position_bias", "failure_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"oracle.{name} must be within [0, 1], got {v}")
        if self.latency not in ("fixed", "uniform", "exponential", "lognormal"):
            raise ConfigError(f"oracle.latency must be fixed|uniform|exponential|lognormal, got {self.latency!r}")


class SimulatedOracle(Oracle):
    Config = SimulatedConfig
    kind = "simulated"

    def __init__(self, cfg: SimulatedConfig, *, task: Any = None, **kw: Any) -> None:
        super().__init__(cfg, task=task, **kw)
        if cfg.base is None:
            self.base: Oracle = KeywordJudge(KeywordConfig(swap_p=0.0), task=task)
        else:
            from rlaif.registry import build
            self.base = build(cfg.base, "oracle.base", task=task, **kw)
        self.free = cfg.price_per_label <= 0 and self.base.free

    def identity(self) -> dict:
        c = self.cfg
        return {**super().identity(), "flip_rate": c.flip_rate, "position_bias": c.position_bias,
                "failure_rate": c.failure_rate, "price_per_label": c.price_per_label, "base": self.base.identity()}

    async def setup(self) -> None:
        await self.base.setup()

    async def aclose(self) -> None:
        await self.base.aclose()

    def worst_case(self, pair: Pair) -> Spend:
        b = self.base.worst_case(pair)
        return Spend(labels=1, dollars=b.dollars + self.cfg.price_per_label, tokens=b.tokens)

    def _rng(self, pair: Pair) -> random.Random:
        return random.Random(hashlib.sha256(f"simulated:{self.cfg.seed}:{pair.id}".encode()).digest())

    def _delay(self, rng: random.Random) -> float:
        mean = self.cfg.latency_ms / 1000.0
        if mean <= 0:
            return 0.0
        kind = self.cfg.latency
        if kind == "uniform":
            return rng.uniform(0.0, 2.0 * mean)
        if kind == "exponential":
            return rng.expovariate(1.0 / mean)
        if kind == "lognormal":
            s = self.cfg.latency_sigma
            return rng.lognormvariate(math.log(mean) - s * s / 2.0, s)
        return mean

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        c = self.cfg
        rngs = [self._rng(p) for p in shown]
        # the draws come first, in a fixed order per pair: the same pair always gets the same fate
        draws = [(r.random(), r.random(), r.random(), self._delay(r)) for r in rngs]
        base = await self.base.judge_shown(shown)
        delay = max((d[3] for d in draws), default=0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        out = []
        for lab, (u_fail, u_bias, u_flip, lat) in zip(base, draws):
            lab.cost += c.price_per_label
            lab.latency += lat
            if u_fail < c.failure_rate:
                out.append(Label.invalid("simulated failure", raw=lab.raw, cost=lab.cost, latency=lab.latency,
                                         tokens_in=lab.tokens_in, tokens_out=lab.tokens_out, attempts=lab.attempts))
                continue
            if u_bias < c.position_bias:
                lab.outcome, lab.p_a, lab.reason = Outcome.A, 1.0, None
                lab.raw = f"[position bias: first shown] {lab.raw or ''}".strip()
            elif u_flip < c.flip_rate and lab.outcome.decisive:
                lab = lab.flipped()
                lab.raw = f"[flipped] {lab.raw or ''}".strip()
            out.append(lab)
        return out
