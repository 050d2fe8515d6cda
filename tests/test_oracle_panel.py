"""oracle=panel and oracle=cascade on real local judges: the gold TF-IDF reward model, the simulated
keyword judge, and ``rlaif serve-judge`` servers on loopback as paid OpenAI-type members (no mocks)."""

import json

import httpx
import pytest

from rlaif.labels.budget import Budget
from rlaif.labels.ledger import Ledger
from rlaif.oracle.cascade import CascadeConfig, CascadeOracle
from rlaif.oracle.panel import PanelConfig, PanelOracle, agreement_of
from rlaif.registry import build
from rlaif.types import Outcome

from helpers import cfg, review_pairs, rlaif, rlaif_env, serve_judge, tiny

PRICE_IN, PRICE_OUT = 1.0, 4.0  # $ per million tokens of the served judges


def served(base: str, name: str, **kw) -> dict:
    """An OpenAI-type member node on a serve-judge server, paid."""
    return {"_target_": "rlaif.oracle.openai.OpenAIOracle", "name": name, "base_url": base + "/v1", "model": "judge",
            "api_key_env": "RLAIF_PANEL_TEST_KEY", "free": False, "price_input_per_mtok": PRICE_IN,
            "price_output_per_mtok": PRICE_OUT, "mode": "logprobs", "max_tokens": 32, "timeout_s": 30,
            "max_attempts": 2, "backoff_initial_s": 0.05, "concurrency": 4, "http_backend": "lean", **kw}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("RLAIF_PANEL_TEST_KEY", "sk-panel-test-0123456789")  # a paid judge needs a key (any, here)


def stats(base: str) -> dict:
    return httpx.get(f"{base}/stats", timeout=5).json()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two judge servers: the keyword judge, and a simulated keyword judge that flips 30% of answers."""
    spec = tmp_path_factory.mktemp("judge") / "noisy.yaml"
    spec.write_text("_target_: rlaif.oracle.simulated.SimulatedOracle\nflip_rate: 0.3\nseed: 7\nswap_p: 0.0\n")
    with serve_judge() as clean, serve_judge("--oracle", str(spec)) as noisy:
        yield clean, noisy


def member_rows(lab) -> list[dict]:
    """The members' answers of a composite label (its parts), as dicts."""
    return [{"judge": p.label.judge, "role": p.role, "outcome": p.label.outcome.value, "p_a": p.label.p_a,
             "cost": p.label.cost, "tokens_in": p.label.tokens_in, "tokens_out": p.label.tokens_out,
             "swapped": p.label.swapped} for p in lab.parts]


def ledger_members(ledger, key) -> list[dict]:
    """The same, from the ledger's own rows of the label's answers."""
    return [{k: (bool(r[k]) if k == "swapped" else r[k]) for k in
             ("judge", "role", "outcome", "p_a", "cost", "tokens_in", "tokens_out", "swapped")}
            for r in ledger.answers(key) if r["of"] == "label"]


def reset(*bases):
    for b in bases:
        httpx.post(f"{b}/admin/reset", json={}, timeout=5)


MEMBERS = ["reward_model", {"_target_": "rlaif.oracle.simulated.SimulatedOracle", "name": "kw", "swap_p": 0.0}]


@pytest.mark.parametrize("aggregation", ["majority", "mean_p"])
def test_panel_aggregates_records_agreement_and_costs_are_the_members_sum(servers, open_labeler, aggregation):
    clean, noisy = servers
    reset(clean, noisy)
    panel = PanelOracle(PanelConfig(members=MEMBERS + [served(clean, "clean"), served(noisy, "noisy")],
                                    aggregation=aggregation))
    assert not panel.free and [m.name for m in panel.members][1:] == ["kw", "clean", "noisy"]
    pairs = review_pairs(24)
    labeler, ledger = open_labeler(panel, Budget(dollars=10.0), progress=False)
    labels = labeler.label(pairs)
    assert all(lab is not None for lab in labels)
    for lab in labels:
        rows = member_rows(lab)
        assert [r["judge"] for r in rows] == ["reward_model:imdb_sentiment", "kw", "clean", "noisy"]
        valid = [r for r in rows if r["outcome"] != "invalid"]
        assert lab.cost == pytest.approx(sum(r["cost"] for r in rows)) and lab.cost > 0
        assert lab.tokens_in == sum(r["tokens_in"] for r in rows) and lab.tokens_out == sum(r["tokens_out"] for r in rows)
        agree = sum(r["outcome"] == lab.outcome.value for r in valid) / len(valid)
        assert agreement_of(lab.raw) == pytest.approx(agree)
        if aggregation == "majority":
            n = {o: sum(r["outcome"] == o for r in valid) for o in ("A", "B", "tie")}
            want = "A" if n["A"] > max(n["B"], n["tie"]) else "B" if n["B"] > max(n["A"], n["tie"]) else "tie"
        else:
            p = sum(r["p_a"] if r["p_a"] is not None else {"A": 1.0, "B": 0.0}.get(r["outcome"], 0.5)
                    for r in valid) / len(valid)
            assert lab.p_a == pytest.approx(p)
            want = "A" if p > 0.5 else "B" if p < 0.5 else "tie"
        assert lab.outcome.value == want
    assert any(agreement_of(lab.raw) < 1 for lab in labels)  # the noisy member disagrees sometimes
    # one request = one ledger row with its exact cost; every member asked each pair exactly once
    totals = ledger.totals()
    assert totals["paid"] == len(pairs) and totals["lost"] == totals["failed"] == 0
    assert totals["spent_dollars"] == pytest.approx(sum(lab.cost for lab in labels))
    for base in (clean, noisy):
        s = stats(base)
        assert s["paid"] == s["paid_pairs"] == len(pairs)
    # every member's answer is its own ledger row with its own cost, beside the panel's label row
    assert all(ledger_members(ledger, labeler.key(p)) == member_rows(lab) for p, lab in zip(pairs, labels))
    judges = ledger.totals()["judges"]
    assert set(judges) == {"reward_model:imdb_sentiment", "kw", "clean", "noisy"}
    assert all(j["answers"] == len(pairs) for j in judges.values())
    assert judges["clean"]["dollars"] > 0 and judges["kw"]["dollars"] == 0
    assert sum(j["dollars"] for j in judges.values()) == pytest.approx(totals["spent_dollars"])


def test_panel_budget_reserves_every_member_and_is_never_overrun(servers, open_labeler):
    clean, noisy = servers
    reset(clean, noisy)
    panel = PanelOracle(PanelConfig(members=[served(clean, "clean"), served(noisy, "noisy")], batch_size=1,
                                    concurrency=1))
    pairs = review_pairs(30, seed=99)
    worst = panel.worst_case(pairs[0])
    assert worst.dollars == pytest.approx(sum(m.worst_case(pairs[0]).dollars for m in panel.members))
    limit = 4.5 * worst.dollars  # room for a few panel requests, not for 30
    labeler, ledger = open_labeler(panel, Budget(dollars=limit), progress=False)
    labels = labeler.label(pairs)
    got = [lab for lab in labels if lab is not None]
    assert 4 <= len(got) < len(pairs)  # the budget refused the rest
    totals = ledger.totals()
    assert totals["spent_dollars"] <= limit and totals["paid"] == len(got)
    assert totals["spent_dollars"] == pytest.approx(sum(lab.cost for lab in got))
    for base in (clean, noisy):  # no member call outside a paid, recorded panel request
        assert stats(base)["paid"] == len(got)


def test_cascade_asks_the_expensive_judge_only_where_the_cheap_one_is_unsure(servers, open_labeler):
    clean, noisy = servers
    reset(clean, noisy)
    httpx.post(f"{clean}/admin/faults", json={"faults": ["garbled", "garbled"]}, timeout=5)  # two invalid cheap answers
    cascade = CascadeOracle(CascadeConfig(cheap=served(clean, "cheap", max_attempts=1), expensive=served(noisy, "big"),
                                          margin=0.3))
    pairs = review_pairs(40, seed=5)
    worst = cascade.worst_case(pairs[0])
    assert worst.dollars == pytest.approx(cascade.cheap.worst_case(pairs[0]).dollars
                                          + cascade.expensive.worst_case(pairs[0]).dollars)
    labeler, ledger = open_labeler(cascade, Budget(dollars=10.0), progress=False)
    labels = labeler.label(pairs)
    docs = [json.loads(lab.raw) for lab in labels]
    up = [d for d in docs if d["cascade"]["escalated"]]
    for pair, lab, d in zip(pairs, labels, docs):
        ms = member_rows(lab)
        cheap = ms[0]
        p = cheap["p_a"]
        unsure = cheap["outcome"] in ("invalid", "tie") or (p is not None and abs(p - 0.5) < 0.3)
        assert d["cascade"]["escalated"] == unsure
        assert [m["role"] for m in ms] == (["cheap", "expensive"] if unsure else ["cheap"])  # what was asked
        assert ledger_members(ledger, labeler.key(pair)) == ms  # both answers in the ledger, each its own row
        assert lab.cost == pytest.approx(sum(m["cost"] for m in ms))  # what was actually called
        if unsure and ms[1]["outcome"] != "invalid":
            assert lab.outcome.value == ms[1]["outcome"] and d["cascade"]["verdict_from"] == "expensive"
        if not unsure:
            assert lab.outcome.value == cheap["outcome"]
    judges = ledger.totals()["judges"]
    assert judges["cheap"]["answers"] == len(pairs) and judges["big"]["answers"] == len(up)
    assert sum(d["cascade"]["why"] == "invalid" for d in docs) == 2
    assert 2 <= len(up) < len(pairs)
    assert stats(clean)["paid"] == len(pairs) and stats(noisy)["paid"] == len(up)  # counted on the servers
    assert ledger.totals()["spent_dollars"] == pytest.approx(sum(lab.cost for lab in labels))


def test_cascade_both_orders_escalates_inconsistent_answers():
    noisy = {"_target_": "rlaif.oracle.simulated.SimulatedOracle", "flip_rate": 0.3, "swap_p": 0.0, "seed": 3}
    cascade = CascadeOracle(CascadeConfig(cheap=noisy, expensive="reward_model", margin=0.0, both_orders=True,
                                          escalate_on_tie=False))
    labels = cascade.label(review_pairs(40, seed=8))
    docs = [json.loads(lab.raw) for lab in labels]
    whys = {d["cascade"]["why"] for d in docs}
    assert "inconsistent" in whys and None in whys
    for lab, d in zip(labels, docs):
        ms = member_rows(lab)
        first, second = ms[0]["outcome"], ms[1]["outcome"]
        assert [m["role"] for m in ms[:2]] == ["cheap", "cheap_reversed"] and ms[1]["swapped"] != ms[0]["swapped"]
        assert (first != second) == (d["cascade"]["why"] == "inconsistent") == d["cascade"]["escalated"]
        assert len(ms) == (3 if d["cascade"]["escalated"] else 2)


def test_panel_composes_from_option_names_and_identity_covers_members():
    c = cfg("oracle=panel", "oracle.members=[reward_model,simulated]", "oracle.aggregation=mean_p")
    panel = build(c.oracle, "oracle")
    assert [m.kind for m in panel.members] == ["reward_model", "simulated"]
    other = build(cfg("oracle=panel", "oracle.members=[reward_model,simulated]", "oracle.aggregation=majority").oracle,
                  "oracle")
    assert panel.identity_hash() != other.identity_hash()
    labs = panel.label(review_pairs(6))
    assert all(lab.outcome is not Outcome.INVALID and len(member_rows(lab)) == 2 for lab in labs)
    casc = build(cfg("oracle=cascade").oracle, "oracle")
    assert (casc.cheap.kind, casc.expensive.kind) == ("simulated", "reward_model")


def test_a_swapped_showing_keeps_every_members_answer_in_the_pairs_order():
    kw = {"_target_": "rlaif.oracle.simulated.SimulatedOracle", "name": "kw", "swap_p": 0.0}
    pairs = review_pairs(8)
    alone = build(kw, "oracle").label(pairs)
    shown_swapped = PanelOracle(PanelConfig(members=[kw, "reward_model"], swap_p=1.0)).label(pairs)
    for a, lab in zip(alone, shown_swapped):
        assert lab.swapped and lab.parts[0].label.outcome is a.outcome  # in the pair's order
        assert lab.parts[0].label.swapped  # the member saw b first
        assert lab.parts[0].label.p_a == pytest.approx(a.p_a)


def test_a_local_llm_member_is_recorded_in_the_pairs_order_whatever_it_was_shown(tmp_path):
    """A real position-sensitive judge (local_llm on the tiny model) inside a panel that swaps: each
    member's recorded P(A) is what that judge says of the showing it saw, put back in the pair's order."""
    import asyncio

    from rlaif.assets import tiny_dir

    tpl = tmp_path / "short.txt"
    tpl.write_text("Better?\n<<<PROMPT>>>\n{prompt}\n<<<RESPONSE A>>>\n{response_a}\n<<<RESPONSE B>>>\n{response_b}\n"
                   "<<<END>>>\n")
    llm = {"_target_": "rlaif.oracle.local_llm.LocalLLMOracle", "name": "tiny_llm", "model": str(tiny_dir()),
           "template": str(tpl), "batch_size": 4, "seed": 1}
    panel = PanelOracle(PanelConfig(members=[llm, "reward_model"], swap_p=0.5, seed=3))
    from rlaif.oracle.server import pair_from_texts

    pairs = [pair_from_texts(f"The film {i}", f"was good {i}", f"was bad, really bad {'!' * i}") for i in range(10)]
    labs = panel.label(pairs)
    judge = panel.members[0]
    asyncio.run(judge.setup())
    seen = set()
    for p, lab in zip(pairs, labs):
        part = lab.parts[0].label
        assert part.p_a is not None, part.reason
        (direct,) = asyncio.run(judge.judge_shown([p.swapped() if part.swapped else p]))
        assert part.p_a == pytest.approx(1 - direct.p_a if part.swapped else direct.p_a, abs=1e-5)
        seen.add((lab.swapped, part.swapped))
    assert len(seen) >= 3  # the panel's and the member's own swaps both varied


def test_panel_invalid_members_are_left_out_and_all_invalid_is_invalid():
    always_bad = {"_target_": "rlaif.oracle.simulated.SimulatedOracle", "failure_rate": 1.0, "name": "bad"}
    kw = {"_target_": "rlaif.oracle.simulated.SimulatedOracle", "name": "kw", "swap_p": 0.0}
    labs = PanelOracle(PanelConfig(members=[always_bad, kw])).label(review_pairs(6))
    for lab in labs:
        rows = member_rows(lab)
        assert rows[0]["outcome"] == "invalid" and lab.outcome.value == rows[1]["outcome"]
        assert agreement_of(lab.raw) == 1.0
    labs = PanelOracle(PanelConfig(members=[always_bad, dict(always_bad, name="bad2")])).label(review_pairs(3))
    assert all(lab.outcome is Outcome.INVALID and "every member invalid" in lab.reason for lab in labs)


def test_bench_oracle_over_a_panel(tmp_path):
    r = rlaif("bench-oracle", "oracle=panel", "oracle.members=[simulated,reward_model]", "oracle.aggregation=mean_p",
              "n_pairs=40", "gold={_target_:rlaif.oracle.simulated.KeywordJudge}", f"out={tmp_path}", full_error=True,
              timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (res_file,) = (tmp_path / "judges").glob("*/result.json")
    res = json.loads(res_file.read_text())
    assert res["pairs"] == 40 and res["answers"] == 80 and res["labels_paid"] == 80
    assert 0.5 < res["gold_agreement"] <= 1.0 and res["dollars_per_1k"] == 0.0
    assert res["latency_p50"] >= 0.0
    led = Ledger(res_file.parent / "ledger.sqlite", readonly=True)
    try:
        answers = led.answers()
        assert len(answers) == 2 * len(led.rows()) == 160
    finally:
        led.close()
    # each member measured on the answers it gave the panel, and a leaderboard row of its own
    assert [(m["judge"], m["role"], m["answers"], m["asked_share"]) for m in res["members"]] == [
        ("simulated", "member", 80, 1.0), ("reward_model:imdb_sentiment", "member", 80, 1.0)]
    gold_rm = res["members"][1]
    assert gold_rm["self_consistency"] == 1.0 and gold_rm["position_bias"] == 0.0  # a reward model sees no order
    board = (tmp_path / "leaderboard.md").read_text()
    assert ")/simulated |" in board and ")/reward_model:imdb_sentiment |" in board


def test_rlaif_run_with_a_panel_records_every_member_in_its_ledger(servers, tmp_path):
    clean, _ = servers
    reset(clean)
    paid = (f"{{_target_:rlaif.oracle.openai.OpenAIOracle,name:served,base_url:'{clean}/v1',model:judge,"
            f"api_key_env:RLAIF_PANEL_TEST_KEY,price_input_per_mtok:{PRICE_IN},price_output_per_mtok:{PRICE_OUT},"
            "mode:logprobs,max_tokens:32,http_backend:lean}")
    run = tmp_path / "run"
    r = rlaif("run", *tiny("budget.labels=8", "budget.labels_per_round=8", "budget.dollars=1.0", "oracle=panel",
                           f"oracle.members=[reward_model,simulated,{paid}]"),
              f"hydra.run.dir={run}", timeout=480,
              env=rlaif_env(True, RLAIF_PANEL_TEST_KEY="sk-panel-test-0123456789"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    led = Ledger(run / "ledger.sqlite", readonly=True)
    try:
        rows, totals, answers = led.rows(), led.totals(), led.answers()
    finally:
        led.close()
    assert rows and all(row["judge"] == "panel" for row in rows)
    members = [[a for a in answers if a["key"] == row["key"]] for row in rows]
    assert all([m["judge"] for m in ms] == ["reward_model:imdb_sentiment", "simulated", "served"] for ms in members)
    assert totals["spent_dollars"] > 0
    assert totals["spent_dollars"] == pytest.approx(sum(m["cost"] for ms in members for m in ms))
    assert totals["judges"]["served"]["dollars"] == pytest.approx(totals["spent_dollars"])  # the only paid member
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ledger"]["judges"]["served"]["answers"] == len(rows)
    assert totals["lost"] == totals["failed"] == 0
    assert stats(clean)["paid"] == len(rows)  # every served answer is in a committed ledger row


def test_members_that_load_models_are_set_up_one_after_the_other(tmp_path):
    """Three local_llm members: loading them at once in threads broke transformers (lazy imports,
    meta-device init); a panel sets its members up in turn."""
    from rlaif.assets import tiny_dir
    from rlaif.oracle.server import pair_from_texts

    tpl = tmp_path / "short.txt"
    tpl.write_text("Better?\n<<<PROMPT>>>\n{prompt}\n<<<RESPONSE A>>>\n{response_a}\n<<<RESPONSE B>>>\n{response_b}\n"
                   "<<<END>>>\n")
    llm = [{"_target_": "rlaif.oracle.local_llm.LocalLLMOracle", "name": f"llm{i}", "model": str(tiny_dir()),
            "template": str(tpl), "seed": i} for i in range(3)]
    labs = PanelOracle(PanelConfig(members=llm)).label([pair_from_texts("The film", "was good", "was bad")])
    assert len(labs[0].parts) == 3 and all(p.label.p_a is not None for p in labs[0].parts)
