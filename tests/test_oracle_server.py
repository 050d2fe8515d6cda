"""``rlaif serve-judge`` as a real process: models, answers, header and queued faults, stats."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from rlaif.oracle import templates
from rlaif.oracle.server import ServerSettings, ServerThread, create_app, judge_state, load_oracle

from helpers import rlaif_env, serve_judge


def chat(client: httpx.Client, url: str, a: str, b: str, **extra) -> httpx.Response:
    content = templates.load("imdb").render("The film", a, b)
    headers = extra.pop("headers", {})
    return client.post(f"{url}/chat/completions", headers=headers,
                       json={"model": "judge", "messages": [{"role": "user", "content": content}], **extra})


@pytest.fixture(scope="module")
def served():
    with serve_judge("--latency-ms", "50", "--retry-after", "2", "--api-key-env", "JUDGE_KEY",
                     env=rlaif_env(JUDGE_KEY="k-123")) as base:
        with httpx.Client(headers={"Authorization": "Bearer k-123"}, timeout=5) as client:
            yield f"{base}/v1", client


def test_models_answers_usage_and_logprobs(served):
    url, client = served
    assert client.get(f"{url}/models").json()["data"][0]["id"] == "judge"
    t0 = time.monotonic()
    r = chat(client, url, "was boring", "was great fun", logprobs=True, top_logprobs=2)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.05
    body = r.json()
    assert body["choices"][0]["message"]["content"].splitlines()[-1] == "Preferred: B"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    last = body["choices"][0]["logprobs"]["content"][-1]
    assert last["token"] == "B" and {t["token"] for t in last["top_logprobs"]} == {"A", "B"}


def test_auth_model_and_marker_errors(served):
    url, client = served
    r = httpx.post(f"{url}/chat/completions", json={"model": "judge", "messages": []},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post(f"{url}/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post(f"{url}/chat/completions", json={"model": "judge", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "markers" in r.json()["error"]["message"]


def test_header_and_queued_faults_and_stats(served):
    url, client = served
    client.post(f"{url.removesuffix('/v1')}/admin/reset")
    r = chat(client, url, "x", "y", headers={"X-Fault": "429"})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert chat(client, url, "x", "y", headers={"X-Fault": "503"}).status_code == 503
    assert chat(client, url, "x", "y", headers={"X-Fault": "empty"}).json()["choices"][0]["message"]["content"] == ""
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, url, "x", "y", headers={"X-Fault": "drop"})
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{url}/chat/completions", timeout=0.3, headers={"X-Fault": "hang"},
                    json={"model": "judge", "messages": [{"role": "user", "content":
                          templates.load("imdb").render("p", "a", "b")}]})
    base = url.removesuffix("/v1")
    assert client.post(f"{base}/admin/faults", json={"faults": ["500", "ok"], "match": "special"}).status_code == 200
    assert chat(client, url, "plain", "y").status_code == 200  # not matched: no fault
    assert chat(client, url, "special", "y").status_code == 500
    assert chat(client, url, "special", "y").status_code == 200
    assert client.post(f"{base}/admin/faults", json={"faults": ["meltdown"]}).status_code == 400
    s = client.get(f"{base}/stats").json()
    assert s["requests"] == 8
    assert s["by_fault"] == {"429": 1, "503": 1, "empty": 1, "drop": 1, "hang": 1, "ok": 2, "500": 1}
    assert s["paid"] == 3 and s["paid_pairs"] == 3 and s["duplicate_paid"] == 0


def test_truncated_fault_is_a_repetition_cut_off_at_max_tokens_on_a_letter(served):
    url, client = served
    for fault, letter in (("truncated", "A"), ("truncated:B", "B")):
        r = chat(client, url, "was boring", "was great fun", headers={"X-Fault": fault}, max_tokens=20,
                 logprobs=True, top_logprobs=2)
        choice = r.json()["choices"][0]
        text = choice["message"]["content"]
        assert choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 20
        assert text.endswith(f"{letter}: {letter}\n\n{letter}") and 60 <= len(text) <= 80  # about 20 tokens
        last = choice["logprobs"]["content"][-1]  # a confident last letter, as the weak judge's was
        assert last["token"] == letter and math.exp(last["logprob"]) == pytest.approx(0.989)
        assert "".join(t["token"] for t in choice["logprobs"]["content"]) == text
    assert client.post(f"{url.removesuffix('/v1')}/admin/faults", json={"faults": ["truncated:C"]}).status_code == 400


def test_load_oracle_by_name_or_path(tmp_path):
    assert load_oracle("keyword").kind == "keyword"
    assert load_oracle("simulated").kind == "simulated"
    y = tmp_path / "judge.yaml"
    y.write_text("_target_: rlaif.oracle.simulated.SimulatedOracle\nflip_rate: 1.0\nswap_p: 0.0\n")
    flipping = load_oracle(str(y))
    assert flipping.cfg.flip_rate == 1.0
    with pytest.raises(SystemExit, match="no oracle 'nope'"):
        load_oracle("nope")
    # served: the always-flipping judge prefers the worse response
    app = create_app(flipping, ServerSettings(model_name="judge"))
    with ServerThread(app) as url, httpx.Client(timeout=5) as client:
        r = chat(client, url, "was boring", "was great fun")
        assert r.json()["choices"][0]["message"]["content"].endswith("Preferred: A")
        assert judge_state(app).stats()["paid"] == 1
