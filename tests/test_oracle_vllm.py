"""One integration test: the ``openai`` oracle against vLLM's own OpenAI-compatible server.

The judge is a random tiny GPT-2, so its answers are garbage: the test proves that the calls work
through a real third-party server and that every label is well formed (here: invalid with a
reason, usage counted), never a made-up side. About a minute, most of it vLLM starting.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
from rlaif.oracle.server import pair_from_texts
from rlaif.types import Outcome

from helpers import free_port, kill_group

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")]

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
SHORT = ("Which response is better?\n<<<PROMPT>>>\n{prompt}\n<<<RESPONSE A>>>\n{response_a}\n<<<RESPONSE B>>>\n"
         "{response_b}\n<<<END>>>\nAnswer with a comparison, then a line: Preferred: A or B\n")


def _tiny_model(out: Path) -> Path:
    """The tiny test GPT-2 with a 512-token context (the cached one has 128, too short for a judge prompt)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlaif.assets import build_tiny_model

    build_tiny_model(out)
    cfg = GPT2Config.from_pretrained(out)
    cfg.n_positions = 512
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm")
    model = _tiny_model(d / "tiny")
    (d / "chat.jinja").write_text(CHAT_TEMPLATE)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    log = open(d / "vllm.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
         "tiny", "--dtype", "float32", "--max-model-len", "512", "--host", "127.0.0.1", "--port", str(port),
         "--chat-template", str(d / "chat.jinja")], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vLLM server did not start; log: {(d / 'vllm.log').read_text()[-3000:]}")
            time.sleep(1)
        (d / "short.txt").write_text(SHORT)
        yield url, d / "short.txt"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
        log.close()


def test_openai_oracle_against_vllm(vllm_server):
    url, template = vllm_server
    o = OpenAIOracle(OpenAIConfig(base_url=url, model="tiny", free=True, api_key_env=None, template=str(template),
                                  max_tokens=16, mode="logprobs", top_logprobs=2, timeout_s=60, max_attempts=2,
                                  concurrency=4))
    pairs = [pair_from_texts("The film", f"was good {i}", f"was dull {i}") for i in range(6)]
    labels = o.label(pairs)
    assert len(labels) == 6
    for lab in labels:
        assert lab.attempts == 1 and lab.tokens_in > 0 and 0 < lab.tokens_out <= 16 and lab.raw is not None
        assert lab.tokens_in + lab.tokens_out <= o.worst_case(pairs[0]).tokens
        if lab.outcome is Outcome.INVALID:
            assert lab.reason and lab.p_a is None
        else:  # a random model may, rarely, end on a letter: then it must be a real verdict
            assert lab.raw.strip().splitlines()[-1].strip().endswith(("A", "B", "tie"))
    # an unknown model is caught at setup, before anything is bought
    from rlaif.oracle.base import OracleError
    with pytest.raises(OracleError, match="unknown model 'gpt-4'.*tiny"):
        OpenAIOracle(OpenAIConfig(base_url=url, model="gpt-4", free=True, api_key_env=None,
                                  template=str(template))).label(pairs[:1])
