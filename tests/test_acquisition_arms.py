"""Every arm end to end on the tiny model, through the real HF generator and reference scorer.

The policy is a LoRA on the tiny GPT-2; its adapter's B matrices are set to random values to move
the policy away from the reference (at B = 0 the two are equal and every implicit reward is 0).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from rlaif.acquisition.base import AcquisitionConfig, AcquisitionContext, score_pairs
from rlaif.acquisition.certainty import CertaintyAcquisition, CertaintyConfig
from rlaif.acquisition.entropy import EntropyAcquisition, EntropyConfig
from rlaif.acquisition.hybrid import HybridAcquisition, HybridConfig
from rlaif.acquisition.hybrid_reuse import HybridReuseAcquisition, HybridReuseConfig
from rlaif.acquisition.offline import OfflineAcquisition, OfflineConfig
from rlaif.acquisition.random import RandomAcquisition
from rlaif.acquisition.uncertainty import UncertaintyAcquisition
from rlaif.assets import imdb_splits, tiny_dir
from rlaif.config import PolicyConfig
from rlaif.generator.hf import HFGenerator, HFGeneratorConfig
from rlaif.models.policy import Policy
from rlaif.registry import build
from rlaif.models.scoring import ReferenceScorer
from rlaif.trainer.dpo_config import DPOConfig
from rlaif.types import Label, Outcome, Prompt, preference_row

N = 4  # entropy samples (kept small: the tiny model is random, the arithmetic is what is tested)


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    return Policy(PolicyConfig(name_or_path=str(tiny_dir()), device="cpu"), DPOConfig(), seed=0)


@pytest.fixture(scope="module")
def prompts(policy):
    out = []
    for i, (text, _) in enumerate(imdb_splits()["prompts"][:60]):
        ids = policy.tokenizer(text)["input_ids"][: 8 + i % 9]  # 8-16 tokens, varied lengths
        out.append(Prompt(id=f"imdb{i}", text=policy.tokenizer.decode(ids), token_ids=tuple(ids)))
    return out


def set_adapter(policy, scale: float, seed: int = 0) -> None:
    """LoRA B = 0 (policy == reference) or random (a policy that differs from the reference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale if scale else torch.zeros_like(p))


def make_ctx(policy, seed: int = 0, ref: ReferenceScorer | None = None, **kw) -> AcquisitionContext:
    return AcquisitionContext(generator=HFGenerator(HFGeneratorConfig(), policy),
                              reference_logprobs=ref or ReferenceScorer(policy), rng=np.random.default_rng(seed),
                              beta=0.2, max_new_tokens=8, min_new_tokens=4, **kw)


def completion_logprob(model, prompt_ids, completion_ids) -> float:
    """Independent check: one unpadded sequence, log-probs of the completion positions only."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[len(prompt_ids) - 1 + t, tok] for t, tok in enumerate(completion_ids)))


# -- implicit rewards ----------------------------------------------------------------------------

def test_implicit_rewards_completion_tokens_only_policy_minus_reference(policy, prompts):
    set_adapter(policy, 0.5)
    ctx = make_ctx(policy)
    pairs = RandomAcquisition(AcquisitionConfig()).select(prompts, 3, ctx)
    score_pairs(pairs, ctx)
    for pair in pairs:
        for side, c in (("r_a", pair.a), ("r_b", pair.b)):
            with policy.current() as m:
                pol = completion_logprob(m, c.prompt.token_ids, c.token_ids)
            with policy.reference() as m:
                ref = completion_logprob(m, c.prompt.token_ids, c.token_ids)
            assert c.logprob == pytest.approx(pol, abs=1e-4)  # the free log-prob from sampling
            assert pair.scores[side] == pytest.approx(0.2 * (pol - ref), abs=1e-4)
            assert abs(pair.scores[side]) > 1e-3  # the adapter really moved the policy
        assert pair.scores["certainty"] == pytest.approx(abs(pair.scores["r_a"] - pair.scores["r_b"]))
        assert pair.scores["policy_p_a"] == pytest.approx(1 / (1 + math.exp(pair.scores["r_b"] - pair.scores["r_a"])))
        # DPO trains on exactly the token ids that were scored
        row = preference_row(pair, Label(Outcome.A))
        assert row["chosen_input_ids"] == list(pair.a.token_ids)
        assert row["rejected_input_ids"] == list(pair.b.token_ids)
        assert row["prompt_input_ids"] == list(pair.prompt.token_ids)
    # prompt tokens are excluded: with them the policy/reference gap would differ
    c = pairs[0].a
    with policy.current() as m:
        full_pol = completion_logprob(m, c.prompt.token_ids[:1], c.prompt.token_ids[1:] + c.token_ids)
    with policy.reference() as m:
        full_ref = completion_logprob(m, c.prompt.token_ids[:1], c.prompt.token_ids[1:] + c.token_ids)
    assert abs(0.2 * (full_pol - full_ref) - pairs[0].scores["r_a"]) > 1e-4


def test_rewards_vanish_while_the_policy_equals_the_reference(policy, prompts):
    set_adapter(policy, 0.0)
    ctx = make_ctx(policy)
    pairs = CertaintyAcquisition(CertaintyConfig(f=2)).select(prompts, 4, ctx)
    comps = [c for p in pairs for c in (p.a, p.b)]
    assert len({len(c.prompt.token_ids) for c in comps}) > 1  # prompts of different lengths (padding)
    # exactly 0, not backend noise: nothing is scored while the weights are the reference's
    assert all(p.scores[k] == 0.0 for p in pairs for k in ("r_a", "r_b", "certainty"))
    assert ctx.stats.totals().scored == 0


def test_reference_logprobs_computed_once_per_completion(policy, prompts):
    set_adapter(policy, 0.5)
    ref = ReferenceScorer(policy)
    ctx = make_ctx(policy, ref=ref)
    pairs = RandomAcquisition(AcquisitionConfig()).select(prompts, 5, ctx)
    unique = len({c.key for p in pairs for c in (p.a, p.b)})
    first = score_pairs(pairs, ctx)
    assert ref.passes == unique
    assert ctx.stats.stages["pair_scoring"].ref_scored == unique
    again = make_ctx(policy, ref=ref)
    second = score_pairs(pairs, again)
    np.testing.assert_allclose(first, second)
    assert ref.passes == unique  # no forward pass the second time
    st = again.stats.stages["pair_scoring"]
    assert (st.ref_scored, st.ref_cache_hits, st.scored) == (0, 2 * len(pairs), 0)


# -- selection -----------------------------------------------------------------------------------

def test_certainty_keeps_largest_uncertainty_keeps_smallest(policy, prompts):
    set_adapter(policy, 0.5)
    cert, unc = CertaintyAcquisition(CertaintyConfig(f=4)), UncertaintyAcquisition(CertaintyConfig(f=4))
    kept_c = cert.select(prompts, 3, make_ctx(policy, seed=1))
    kept_u = unc.select(prompts, 3, make_ctx(policy, seed=1))
    cands = sorted(c.scores["certainty"] for c in cert.last["candidates"])
    assert len(cert.last["candidates"]) == 12
    tol = cert.cfg.tolerance  # scores closer than this are ties (broken by the seeded order)
    assert sorted(p.scores["certainty"] for p in kept_c) == pytest.approx(cands[-3:], abs=tol)
    assert sorted(p.scores["certainty"] for p in kept_u) == pytest.approx(cands[:3], abs=tol)
    assert [p.id for p in cert.last["candidates"]] == [p.id for p in unc.last["candidates"]]  # same seed


def test_hybrid_entropy_filter_then_certainty_filter_with_compute_counted(policy, prompts):
    set_adapter(policy, 0.5)
    n, k, f = 2, 2, 3
    arm = HybridAcquisition(HybridConfig(n_samples=N, k=k, f=f))
    ctx = make_ctx(policy, seed=2)
    kept = arm.select(prompts, n, ctx)
    h = arm.last["entropy"]
    assert len(h) == n * f * k
    top = sorted(h, key=h.get, reverse=True)[: n * f]
    cands = arm.last["candidates"]
    assert {c.prompt.id for c in cands} == set(top)  # pairs only for the n*f highest-entropy prompts
    assert sorted(p.scores["certainty"] for p in kept) == pytest.approx(
        sorted(c.scores["certainty"] for c in cands)[-n:], abs=arm.cfg.tolerance)
    for p in kept:
        assert p.scores["entropy"] == h[p.prompt.id] and not p.identical
    st = ctx.stats.stages
    assert st["prompt_scoring"].generations == n * f * k * N
    assert 4 * n * f * k * N <= st["prompt_scoring"].tokens <= 8 * n * f * k * N
    assert st["pair_generation"].generations == 2 * n * f
    assert st["pair_scoring"].ref_scored == st["pair_scoring"].scored == 2 * n * f  # policy log-probs free
    assert all(s.seconds > 0 for s in st.values())
    d = json.loads(json.dumps(ctx.stats.as_dict()))
    assert set(d) == {"prompt_scoring", "pair_generation", "pair_scoring"}


def test_hybrid_reuse_generates_nothing_beyond_the_entropy_samples(policy, prompts):
    set_adapter(policy, 0.5)
    n, k, p = 2, 2, 2
    ref = ReferenceScorer(policy)
    arm = HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=k, prompts_per_label=p))
    ctx = make_ctx(policy, seed=2, ref=ref)
    kept = arm.select(prompts, n, ctx)
    assert len(kept) == n and len({x.prompt.id for x in kept}) == n
    assert "pair_generation" not in ctx.stats.stages
    assert ctx.stats.stages["prompt_scoring"].generations == n * p * k * N
    h = arm.last["entropy"]
    top = set(sorted(h, key=h.get, reverse=True)[: n * p])
    cands = arm.last["candidates"]
    assert {c.prompt.id for c in cands} == top
    assert len(cands) == n * p * N * (N - 1) // 2  # the random tiny model never repeats a sample here
    assert ref.passes == n * p * N  # one reference pass per sample, however many pairs it is in
    # one pair per prompt: each prompt's most certain pair competes, the n most certain win
    best = {}
    for c in cands:
        best[c.prompt.id] = max(best.get(c.prompt.id, 0.0), c.scores["certainty"])
    assert sorted(x.scores["certainty"] for x in kept) == sorted(best.values())[-n:]
    for x in kept:
        assert x.scores["certainty"] == best[x.prompt.id] and x.scores["entropy"] == h[x.prompt.id]


ARMS = {
    "random": lambda: RandomAcquisition(AcquisitionConfig()),
    "entropy": lambda: EntropyAcquisition(EntropyConfig(n_samples=N, k=2)),
    "certainty": lambda: CertaintyAcquisition(CertaintyConfig(f=2)),
    "uncertainty": lambda: UncertaintyAcquisition(CertaintyConfig(f=2)),
    "hybrid": lambda: HybridAcquisition(HybridConfig(n_samples=N, k=2, f=2)),
    "hybrid_reuse": lambda: HybridReuseAcquisition(HybridReuseConfig(n_samples=N, k=2, prompts_per_label=2)),
    "offline": lambda: OfflineAcquisition(OfflineConfig()),
}


@pytest.mark.parametrize("name", list(ARMS))
def test_same_seed_same_pairs(policy, prompts, name):
    set_adapter(policy, 0.5)

    def run(seed):
        arm, ctx = ARMS[name](), make_ctx(policy, seed=seed)
        arm.prepare(prompts, 4, ctx)
        pairs = arm.select(prompts, 3, ctx)
        assert len(pairs) == 3 and all(not p.identical for p in pairs)
        return [p.id for p in pairs], [p.scores for p in pairs]

    ids, scores = run(5)
    assert run(5) == (ids, scores)
    assert run(6)[0] != ids


def test_arms_fall_short_loudly_when_the_pool_is_small(policy, prompts, caplog):
    set_adapter(policy, 0.5)
    small = prompts[:3]
    with caplog.at_level(logging.WARNING):
        for name in ("random", "entropy", "certainty", "hybrid", "hybrid_reuse"):
            pairs = ARMS[name]().select(small, 5, make_ctx(policy))
            assert len(pairs) == 3 and len({p.prompt.id for p in pairs}) == 3, name
    assert "hybrid_reuse: returning 3 of the 5 pairs" in caplog.text
    assert "the pool has only 3 prompts" in caplog.text


def test_offline_banks_reference_pairs_before_training(policy, prompts):
    set_adapter(policy, 0.0)  # before round 1 the policy equals the reference
    arm, ctx = OfflineAcquisition(OfflineConfig(spare=0.25)), make_ctx(policy)
    arm.prepare(prompts, 8, ctx)
    assert len(arm.bank) == 10 and ctx.stats.stages["pair_generation"].generations >= 20
    banked = [p.id for p in arm.bank]
    set_adapter(policy, 0.5)  # training moved the policy; the arm must not follow it
    ctx = make_ctx(policy, round=1)
    used = {p.prompt.id for p in arm.bank[:2]}
    pool = [p for p in prompts if p.id not in used]  # two banked prompts were consumed elsewhere
    pairs = arm.select(pool, 4, ctx)
    assert [p.id for p in pairs] == [b for b in banked[2:6]]
    ref = ReferenceScorer(policy)
    for p in pairs:
        assert p.round == 1 and p.a.source == p.b.source == "reference"
        assert [p.a.logprob, p.b.logprob] == pytest.approx(ref([p.a, p.b]), abs=1e-4)
    assert "pair_generation" not in ctx.stats.stages  # handed out from the bank
    # the bank runs dry: fresh pairs from the reference (the HF generator can sample it)
    more = arm.select([p for p in pool if p.id not in {x.prompt.id for x in pairs}], 6, make_ctx(policy, round=2))
    assert len(more) == 6 and all(c.source == "reference" for p in more for c in (p.a, p.b))
    fresh = [p for p in more if p.id not in banked]
    assert fresh and all([p.a.logprob, p.b.logprob] == pytest.approx(ref([p.a, p.b]), abs=1e-4) for p in fresh)


def test_offline_refuses_to_sample_the_policy_without_a_reference(policy, prompts):
    class PolicyOnly(HFGenerator):
        name = "policy-only"
        samples_reference = False

    arm = OfflineAcquisition(OfflineConfig())
    ctx = make_ctx(policy)
    ctx.generator = PolicyOnly(HFGeneratorConfig(), policy)
    with pytest.raises(RuntimeError, match="prepare"):
        arm.select(prompts, 2, ctx)


# -- configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["offline", "entropy", "certainty", "uncertainty", "hybrid", "hybrid_reuse"])
def test_configs_build_with_the_paper_imdb_defaults(name):
    from pathlib import Path

    from rlaif.config import load_option

    node = load_option(Path(__file__).parents[1] / "conf" / "acquisition" / f"{name}.yaml")
    arm = build(node, f"acquisition={name}")
    assert arm.name == name
    cfg = arm.cfg
    assert cfg.drop_identical is True
    if name != "hybrid_reuse":
        assert cfg.temperature == 0.7  # pairs at temperature 0.7
    if hasattr(cfg, "n_samples"):
        assert (cfg.n_samples, cfg.entropy_temperature, cfg.k) == (8, 1.0, 8)
    if hasattr(cfg, "f"):
        assert cfg.f == 32


@pytest.mark.parametrize("adapter", [0.0, 0.5], ids=["policy=reference", "trained"])
@pytest.mark.parametrize("name", list(ARMS))
def test_selection_does_not_depend_on_the_thread_count(policy, prompts, name, adapter):
    """Same seed, 1 or 2 threads: the same pairs. Thread count changes the log-probs' last bits; with
    the policy still the reference (round 1) every margin is exactly 0 and nothing is ranked by them."""
    set_adapter(policy, adapter)

    def run(threads):
        torch.set_num_threads(threads)
        try:
            arm, ctx = ARMS[name](), make_ctx(policy, seed=3)
            arm.prepare(prompts, 4, ctx)
            return [(p.id, p.a.token_ids, p.b.token_ids) for p in arm.select(prompts, 4, ctx)]
        finally:
            torch.set_num_threads(1)

    assert run(1) == run(2)
