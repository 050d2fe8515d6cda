"""The HF generator (the fallback where vLLM is absent), retokenisation drift, and the vLLM
generator's error where vllm cannot be imported. No vLLM engine is started here."""

from __future__ import annotations

import sys

import pytest

from rlaif.config import PolicyConfig
from rlaif.generator.base import SamplingParams
from rlaif.generator.hf import HFGenerator, HFGeneratorConfig
from rlaif.models.policy import Policy
from rlaif.models.scoring import sequence_logprobs
from rlaif.trainer.dpo_config import DPOConfig
from rlaif.types import Completion, Label, Outcome, Pair, Prompt, preference_row

TEXTS = ["This movie was one of the most", "I really did not expect the ending of this film to be so",
         "The actors in this picture"]


@pytest.fixture(scope="module")
def policy():
    return Policy(PolicyConfig(name_or_path="tiny", dtype="float32", device="cpu"), DPOConfig(lora=True), seed=0)


@pytest.fixture(scope="module")
def prompts(policy):
    return [Prompt(f"p{i}", t, tuple(policy.tokenizer(t)["input_ids"])) for i, t in enumerate(TEXTS)]


def test_hf_sample_carries_ids_and_raw_logprobs(policy, prompts):
    gen = HFGenerator(HFGeneratorConfig(batch_size=8), policy)
    groups = gen.sample(prompts, SamplingParams(n=3, temperature=0.7, max_new_tokens=12, min_new_tokens=3, seed=0))
    assert [len(g) for g in groups] == [3, 3, 3]
    comps = [c for g in groups for c in g]
    for c in comps:
        assert 3 <= c.num_tokens <= 12 and len(c.token_logprobs) == c.num_tokens
        if policy.eos_id in c.token_ids:
            assert c.token_ids[-1] == policy.eos_id
    # the free log-probs (raw logits of generate, before temperature) equal a scoring pass
    assert gen.score(comps) == pytest.approx([c.logprob for c in comps], abs=1e-3)


def _drifting(tokenizer, comps):
    """Completions whose text does not re-encode to the sampled ids."""
    out = []
    for c in comps:
        again = tuple(tokenizer(c.text, add_special_tokens=False)["input_ids"])
        if again != c.token_ids:
            out.append((c, again))
    return out


def test_retokenisation_drift_is_real_and_our_path_keeps_ids(policy, prompts):
    tok = policy.tokenizer
    # 1. a constructed case: a merged BPE token spelt as its single-byte pieces decodes to the
    #    same text, but re-encodes to the merged token -- other ids, another log-prob
    merged = next(t for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
                  if len(t) >= 3 and all(ch in tok.get_vocab() for ch in t))
    pieces = tuple(tok.convert_tokens_to_ids(list(merged)))
    text = tok.decode(list(pieces))
    assert text == tok.decode([tok.convert_tokens_to_ids(merged)])
    assert tuple(tok(text, add_special_tokens=False)["input_ids"]) != pieces

    # 2. sampled completions drift too: a random policy often samples non-canonical spellings
    gen = HFGenerator(HFGeneratorConfig(), policy)
    comps = [c for g in gen.sample(prompts, SamplingParams(n=8, temperature=1.0, max_new_tokens=16, seed=1))
             for c in g]
    drift = _drifting(tok, comps)
    assert drift, "expected at least one sampled completion whose text re-encodes to other ids"
    c, again = drift[0]
    with policy.current() as m:
        orig, redo = sequence_logprobs(m, [(c.prompt.token_ids, c.token_ids), (c.prompt.token_ids, again)],
                                       pad_id=policy.pad_id)
    assert abs(orig - redo) > 1e-3, "re-tokenising changed the ids, and with them the score"
    # our path scores, caches and trains on the sampled ids, never on re-encoded text
    assert gen.score([c])[0] == pytest.approx(c.logprob, abs=1e-3)
    assert gen.score([c])[0] == pytest.approx(orig, abs=1e-5)
    retok = Completion(prompt=c.prompt, text=c.text, token_ids=again)
    assert retok.key != c.key  # the log-prob caches key on ids: no silent reuse across spellings
    other = next(x for x in comps if x.prompt == c.prompt and x is not c)
    row = preference_row(Pair(c.prompt, c, other), Label(outcome=Outcome.A))
    assert tuple(row["chosen_input_ids"]) == c.token_ids and tuple(row["rejected_input_ids"]) == other.token_ids


def test_vllm_generator_without_vllm_names_hf_fallback(policy, monkeypatch):
    from rlaif.generator import vllm as vgen

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    g = vgen.VLLMGenerator(vgen.VLLMGeneratorConfig(), policy)  # lazy: constructing needs no vllm
    with pytest.raises(ImportError, match="generator=hf"):
        g.start()
    with pytest.raises(ImportError, match="generator=hf"):
        g.sample([Prompt("p", "x", (1, 2))], SamplingParams(n=1))
    assert g.llm is None


def test_vllm_generator_rejects_bad_config(policy):
    from rlaif.generator.vllm import VLLMGenerator, VLLMGeneratorConfig

    with pytest.raises(ValueError, match="score_backend"):
        VLLMGenerator(VLLMGeneratorConfig(score_backend="tgi"), policy)
    with pytest.raises(ValueError, match="multiproc_method"):
        VLLMGenerator(VLLMGeneratorConfig(multiproc_method="thread"), policy)
    g = VLLMGenerator(VLLMGeneratorConfig(max_model_len=4096), policy)
    with pytest.raises(ValueError, match="exceeds the model's limit"):
        g.engine_args()
