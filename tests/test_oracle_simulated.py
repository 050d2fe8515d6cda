"""The simulated judge recovers its configured flaws; it is seeded and reproducible."""

from __future__ import annotations

import asyncio
import time

import pytest

from rlaif.oracle.server import pair_from_texts
from rlaif.oracle.simulated import KeywordConfig, KeywordJudge, SimulatedConfig, SimulatedOracle
from rlaif.registry import build
from rlaif.types import Outcome

N = 3000


def pairs(n: int = N):
    out = []
    for i in range(n):
        good, bad = f"{i}: a great and wonderful film", f"{i}: a boring and awful film"
        out.append(pair_from_texts(f"review {i}", *((good, bad) if i % 3 else (bad, good))))
    return out


PAIRS = pairs()
TRUTH = [KeywordJudge.score(p.a.text) > KeywordJudge.score(p.b.text) for p in PAIRS]


def test_flip_rate_is_recovered():
    o = SimulatedOracle(SimulatedConfig(flip_rate=0.2, swap_p=0.5, seed=1))
    labs = o.label(PAIRS)
    flipped = sum((l.outcome is Outcome.A) != t for l, t in zip(labs, TRUTH)) / N
    assert flipped == pytest.approx(0.2, abs=0.03)


def test_position_bias_is_recovered():
    o = SimulatedOracle(SimulatedConfig(position_bias=0.3, swap_p=0.5, seed=2))
    labs = o.label(PAIRS)
    # the "first shown" answer: A when not swapped, B when swapped
    first = sum((l.outcome is Outcome.A) != l.swapped for l in labs) / N
    # P(first) = bias + (1 - bias) * P(truth is first shown) and the truth is first about half the time
    truth_first = sum(t != l.swapped for t, l in zip(TRUTH, labs)) / N
    bias = (first - truth_first) / (1 - truth_first)
    assert bias == pytest.approx(0.3, abs=0.04)
    # an answer other than "the first shown" came from the base judge, so it is the truth
    assert all((l.outcome is Outcome.A) == t for l, t in zip(labs, TRUTH) if (l.outcome is Outcome.A) == l.swapped)


def test_failures_are_invalid_with_reason_and_seeded():
    o = SimulatedOracle(SimulatedConfig(failure_rate=0.1, flip_rate=0.1, position_bias=0.1, seed=3))
    a, b = o.label(PAIRS[:1000]), o.label(PAIRS[:1000])
    assert [l.outcome for l in a] == [l.outcome for l in b]
    bad = [l for l in a if l.outcome is Outcome.INVALID]
    assert len(bad) / 1000 == pytest.approx(0.1, abs=0.03)
    assert all(l.reason == "simulated failure" for l in bad)
    c = SimulatedOracle(SimulatedConfig(failure_rate=0.1, flip_rate=0.1, position_bias=0.1, seed=4)).label(PAIRS[:1000])
    assert [l.outcome for l in a] != [l.outcome for l in c]


def test_latency_is_simulated_concurrently():
    o = SimulatedOracle(SimulatedConfig(latency_ms=100, latency="exponential", batch_size=8, seed=0))

    async def go():
        t0 = time.monotonic()
        labs = await asyncio.gather(*(o.judge(PAIRS[i:i + 8]) for i in range(0, 64, 8)))
        return time.monotonic() - t0, [l for b in labs for l in b]

    took, labs = asyncio.run(go())
    assert 0.05 < took < 1.5  # eight batches in parallel, not 64 sleeps in a row
    assert sum(l.latency for l in labs) / len(labs) == pytest.approx(0.1, rel=0.5)


def test_wraps_any_oracle_from_a_nested_node_and_prices():
    o = build({"_target_": "rlaif.oracle.simulated.SimulatedOracle", "flip_rate": 0.0, "price_per_label": 0.01,
               "base": {"_target_": "rlaif.oracle.simulated.KeywordJudge", "tie_margin": 100.0}}, "oracle")
    assert isinstance(o.base, KeywordJudge) and not o.free
    assert o.worst_case(PAIRS[0]).dollars == pytest.approx(0.01)
    labs = o.label(PAIRS[:10])
    assert all(l.outcome is Outcome.TIE and l.cost == pytest.approx(0.01) for l in labs)
    assert o.identity()["base"]["kind"] == "keyword"
    assert SimulatedOracle(SimulatedConfig()).free and KeywordJudge(KeywordConfig()).free
