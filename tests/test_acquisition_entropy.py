"""The entropy estimate scores each prompt by its own samples -- and the released code's did not.

A real :class:`Generator` over controlled categorical distributions (known entropies) drives the
estimator and the arms. The sliding-window estimator of the paper's released code is
reimplemented here as the counter-example: it fails the same ranking test.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from rlaif.acquisition.base import AcquisitionContext, entropy_estimate, prompt_entropies
from rlaif.acquisition.certainty import CertaintyAcquisition, CertaintyConfig
from rlaif.acquisition.entropy import EntropyAcquisition, EntropyConfig
from rlaif.acquisition.hybrid import HybridAcquisition, HybridConfig
from rlaif.acquisition.hybrid_reuse import HybridReuseAcquisition, HybridReuseConfig
from rlaif.generator.base import Generator
from rlaif.types import Completion, Prompt

N = 8  # the paper's camera-ready N


class CategoricalGenerator(Generator):
    """Samples from fixed, known completion distributions (one per prompt), with raw log-probs.

    ``table[prompt ids] = (completions, probs)``; temperature reshapes the sampling distribution
    (p^(1/T), renormalised) while the reported log-prob stays the raw log p, as with a real model.
    """

    name = "categorical"

    def __init__(self, table: dict, reference: dict | None = None, with_logprobs: bool = True) -> None:
        super().__init__(None, None)
        self.table, self.reference = table, reference or table
        self.with_logprobs = with_logprobs  # False: a backend that returns no log-probs
        self.sampled = 0

    def sample(self, prompts, params, source="policy"):
        rng = np.random.default_rng(params.seed)
        table = self.table if source == "policy" else self.reference
        out = []
        for p in prompts:
            comps, probs = table[p.token_ids]
            q = np.asarray(probs) ** (1.0 / params.temperature)
            idx = rng.choice(len(comps), size=params.n, p=q / q.sum())
            out.append([Completion(p, " ".join(map(str, comps[i])), comps[i],
                                   float(np.log(probs[i])) if self.with_logprobs else None, source=source)
                        for i in idx])
            self.sampled += params.n
        return out

    def logprob(self, c: Completion, table: dict) -> float:
        comps, probs = table[c.prompt.token_ids]
        return float(np.log(probs[comps.index(c.token_ids)]))

    def score(self, completions):
        return [self.logprob(c, self.table) for c in completions]


class CachedReference:
    """log pi_ref of the categorical reference, cached per completion like ReferenceScorer."""

    def __init__(self, gen: CategoricalGenerator) -> None:
        self.gen, self.cache, self.passes = gen, {}, 0

    def __call__(self, completions):
        for c in completions:
            if c.key not in self.cache:
                self.cache[c.key] = self.gen.logprob(c, self.gen.reference)
                self.passes += 1
        return [self.cache[c.key] for c in completions]


def prompt(i: int) -> Prompt:
    return Prompt(id=f"p{i}", text=f"prompt {i}", token_ids=(900 + i, 7))


def uniform(i: int, k: int):
    return [(i, j, j + 1) for j in range(k)], [1.0 / k] * k


def geometric(i: int, a: float, size: int = 4000):
    w = np.exp(-a * np.arange(size))
    w /= w.sum()
    return [(i, j) for j in range(size)], list(w)


def true_entropy(probs) -> float:
    p = np.asarray(probs)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def context(gen: CategoricalGenerator, seed: int = 0) -> AcquisitionContext:
    return AcquisitionContext(generator=gen, reference_logprobs=CachedReference(gen),
                              rng=np.random.default_rng(seed), beta=0.2, max_new_tokens=4, min_new_tokens=1)


def sliding_window_entropy(samples: list[list[Completion]], n: int) -> np.ndarray:
    """The released code's defect, reproduced: the samples of the whole batch are flattened and
    prompt s is scored by the window flat[s : s+N] -- for s >= 1 mostly other prompts' samples."""
    flat = np.array([c.logprob for group in samples for c in group])
    return np.array([-flat[s:s + n].mean() for s in range(len(samples))])


def ranking(scores) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]


# -- the estimator ------------------------------------------------------------------------------

def test_own_samples_rank_known_entropies_and_sliding_window_does_not():
    # uniform distributions: every sample has -log p = log K exactly, so the true order is certain
    sizes = [16, 1, 256, 4, 64, 2, 32, 8]
    prompts = [prompt(i) for i in range(len(sizes))]
    gen = CategoricalGenerator({p.token_ids: uniform(i, k) for i, (p, k) in enumerate(zip(prompts, sizes))})
    entropy, samples = prompt_entropies(prompts, context(gen), N, temperature=1.0)
    truth = ranking(np.log(sizes))

    np.testing.assert_allclose(entropy, np.log(sizes), atol=1e-12)
    assert ranking(entropy) == truth

    window = sliding_window_entropy(samples, N)
    assert window[0] == pytest.approx(math.log(sizes[0]))  # only prompt 0 gets its own samples...
    assert not np.allclose(window[1:], np.log(sizes[1:]))  # ...the others are scored by prompt 0's
    assert ranking(window) != truth
    assert ranking(window)[0] != truth[0]  # it even picks the wrong most-uncertain prompt


@pytest.mark.parametrize("seed", range(5))
def test_sampled_estimate_ranks_distinct_entropies(seed):
    # non-uniform distributions: the estimate is noisy (sd of one sample's -log p ~ 1 nat, of the
    # mean of N=8 ~ 0.35), but entropies ~2 nats apart are ranked right by a prompt's own samples
    rates = [0.3, 0.004, 3.0, 0.03]  # true entropies ~2.2, 6.5, 0.2, 4.5 nats
    prompts = [prompt(i) for i in range(len(rates))]
    table = {p.token_ids: geometric(i, a) for i, (p, a) in enumerate(zip(prompts, rates))}
    gen = CategoricalGenerator(table)
    truth = ranking([true_entropy(table[p.token_ids][1]) for p in prompts])
    entropy, samples = prompt_entropies(prompts, context(gen, seed), N, temperature=1.0)
    assert ranking(entropy) == truth
    assert ranking(sliding_window_entropy(samples, N)) != truth


def test_estimator_refuses_mixed_prompts_and_missing_logprobs():
    a, b = prompt(0), prompt(1)
    with pytest.raises(ValueError, match="different prompts"):
        entropy_estimate([Completion(a, "x", (1,), -1.0), Completion(b, "y", (2,), -2.0)])
    with pytest.raises(ValueError, match="no log-prob"):
        entropy_estimate([Completion(a, "x", (1,), None)])
    assert entropy_estimate([Completion(a, "x", (1,), -1.0), Completion(a, "y", (2,), -3.0)]) == 2.0


# -- the arms on known distributions ------------------------------------------------------------

def test_entropy_arm_keeps_the_most_uncertain_prompts_and_replaces_identical_pairs(caplog):
    sizes = [1, 256, 4, 64, 2, 32]  # the K=1 prompt can only ever make an identical pair
    prompts = [prompt(i) for i in range(len(sizes))]
    gen = CategoricalGenerator({p.token_ids: uniform(i, k) for i, (p, k) in enumerate(zip(prompts, sizes))})
    arm = EntropyAcquisition(EntropyConfig(n_samples=N, k=3))
    ctx = context(gen)
    pairs = arm.select(prompts, 2, ctx)  # scores all 6 (k*n = 6), keeps the 2 most uncertain
    assert [p.prompt.id for p in pairs] == ["p1", "p3"]
    assert [p.scores["entropy"] for p in pairs] == pytest.approx([math.log(256), math.log(64)])
    assert ctx.stats.stages["prompt_scoring"].generations == 6 * N
    assert ctx.stats.stages["prompt_scoring"].scored == 0  # log-probs came free with sampling

    # all 6 prompts wanted: the K=1 prompt's pair stays identical and is dropped, with a warning
    with caplog.at_level(logging.WARNING):
        pairs = EntropyAcquisition(EntropyConfig(n_samples=N, k=1)).select(prompts, 6, context(gen))
    assert len(pairs) == 5 and "p0" not in {p.prompt.id for p in pairs}
    assert all(not p.identical for p in pairs)
    assert "returning 5 of the 6" in caplog.text


def hybrid_world():
    """Two high-entropy prompts whose pairs the policy barely separates from the reference, and
    two low-entropy prompts whose pairs it separates strongly."""
    h1, h2, l1, l2 = (prompt(i) for i in range(4))
    policy = {h1.token_ids: uniform(0, 64), h2.token_ids: uniform(1, 64),
              l1.token_ids: uniform(2, 2), l2.token_ids: uniform(3, 2)}
    ref_h2 = np.exp(np.arange(64) / 8.0)
    reference = {h1.token_ids: uniform(0, 64), h2.token_ids: (policy[h2.token_ids][0], list(ref_h2 / ref_h2.sum())),
                 l1.token_ids: (policy[l1.token_ids][0], [0.999, 0.001]),
                 l2.token_ids: (policy[l2.token_ids][0], [0.001, 0.999])}
    return [h1, h2, l1, l2], CategoricalGenerator(policy, reference)


def test_hybrid_filters_entropy_first_then_certainty():
    prompts, gen = hybrid_world()
    # hybrid, n=1, k=2, f=2: entropy keeps h1, h2; of their pairs the more certain is h2's
    arm = HybridAcquisition(HybridConfig(n_samples=N, k=2, f=2))
    ctx = context(gen)
    [pair] = arm.select(prompts, 1, ctx)
    assert pair.prompt.id == "p1"
    assert pair.scores["entropy"] == pytest.approx(math.log(64))
    assert pair.scores["certainty"] == pytest.approx(abs(pair.scores["r_a"] - pair.scores["r_b"]))
    assert pair.scores["certainty"] == max(c.scores["certainty"] for c in arm.last["candidates"])
    assert {c.prompt.id for c in arm.last["candidates"]} == {"p0", "p1"}
    # the filters in the other order (certainty over all pairs) would have bought a low-entropy pair
    [by_certainty] = CertaintyAcquisition(CertaintyConfig(f=4)).select(prompts, 1, context(gen))
    assert by_certainty.prompt.id in {"p2", "p3"}
    # compute: 4 prompts x N entropy samples, 2 pairs (4 samples, more if identical), 4 reference passes
    st = ctx.stats.stages
    assert st["prompt_scoring"].generations == 4 * N
    assert st["pair_generation"].generations >= 4
    assert st["pair_scoring"].ref_scored == len({c.key for p in arm.last["candidates"] for c in (p.a, p.b)})


def test_hybrid_reuse_pairs_the_entropy_samples_themselves():
    prompts, gen = hybrid_world()
    arm = HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=2, prompts_per_label=2))
    ctx = context(gen)
    [pair] = arm.select(prompts, 1, ctx)
    assert pair.prompt.id == "p1"  # top-2 entropy prompts h1, h2; h2's pairs are the certain ones
    assert "pair_generation" not in ctx.stats.stages  # no generation beyond the N samples
    assert ctx.stats.stages["prompt_scoring"].generations == 4 * N
    cands = arm.last["candidates"]
    assert {c.prompt.id for c in cands} == {"p0", "p1"}
    assert len(cands) <= 2 * N * (N - 1) // 2 and all(not c.identical for c in cands)
    assert pair.scores["certainty"] == max(c.scores["certainty"] for c in cands)


def test_hybrid_reuse_max_pairs_per_prompt_knob():
    prompts, gen = hybrid_world()
    one = HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=2, prompts_per_label=1))
    assert len({p.prompt.id for p in one.select(prompts, 2, context(gen))}) == 2
    many = HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=2, prompts_per_label=1, max_pairs_per_prompt=3))
    pairs = many.select(prompts, 3, context(gen))
    assert len(pairs) == 3 and len({p.prompt.id for p in pairs}) < 3
    assert len({frozenset((p.a.token_ids, p.b.token_ids)) for p in pairs}) == 3  # no pair bought twice


@pytest.mark.parametrize("arm", [EntropyAcquisition(EntropyConfig(n_samples=N, k=2)),
                                 HybridAcquisition(HybridConfig(n_samples=N, k=2, f=2)),
                                 HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=1, prompts_per_label=2)),
                                 CertaintyAcquisition(CertaintyConfig(f=3))],
                         ids=lambda a: a.name)
def test_same_seed_same_pairs_on_known_distributions(arm):
    prompts, gen = hybrid_world()
    prompts = prompts + [prompt(i) for i in range(4, 12)]
    for p in prompts[4:]:
        gen.table[p.token_ids] = gen.reference[p.token_ids] = uniform(int(p.id[1:]), 16)
    first = [p.id for p in arm.select(prompts, 2, context(gen, seed=3))]
    again = [p.id for p in arm.select(prompts, 2, context(gen, seed=3))]
    other = [p.id for p in arm.select(prompts, 2, context(gen, seed=4))]
    assert first == again and len(first) == 2
    assert other != first


def test_samples_without_logprobs_are_scored_and_counted():
    sizes = [4, 64, 16]
    prompts = [prompt(i) for i in range(len(sizes))]
    gen = CategoricalGenerator({p.token_ids: uniform(i, k) for i, (p, k) in enumerate(zip(prompts, sizes))},
                               with_logprobs=False)
    ctx = context(gen)
    entropy, _ = prompt_entropies(prompts, ctx, N)
    np.testing.assert_allclose(entropy, np.log(sizes))
    st = ctx.stats.stages["prompt_scoring"]
    assert st.generations == 3 * N and 0 < st.scored <= 3 * N  # one policy pass per distinct sample


@pytest.mark.parametrize("make", [lambda: EntropyAcquisition(EntropyConfig(n_samples=N)),
                                  lambda: HybridAcquisition(HybridConfig(n_samples=N)),
                                  lambda: HybridReuseAcquisition(HybridReuseConfig(n_samples=N)),
                                  lambda: CertaintyAcquisition(CertaintyConfig())])
def test_zero_labels_asked_costs_nothing(make):
    prompts, gen = hybrid_world()
    ctx = context(gen)
    assert make().select(prompts, 0, ctx) == []
    assert ctx.stats.totals().generations == 0
