"""Crash-safe resume: run state, refusing a changed config, zero-cost reparse, and kill -9 during labelling."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlaif.labels.budget import Budget
from rlaif.labels.ledger import ConfigChangedError, Ledger
from rlaif.labels.labeler import Labeler
from rlaif.labels.reparse import main as reparse_main
from rlaif.run.state import RunState, RunStateError, label_fingerprint, round_seed
from rlaif.types import Outcome

from helpers import ROOT, kill_group, review_pairs, rlaif_env, rlaif_popen, serve_judge, tiny


# -- run state --------------------------------------------------------------------------------------
def test_run_state_roundtrip_and_atomic_files(tmp_path):
    st = RunState(tmp_path)
    assert not st.exists and st.pairs(0) is None
    pairs = review_pairs(5)
    st.save_pairs(0, pairs)
    st.save_pairs(0, pairs)  # idempotent
    with pytest.raises(RunStateError, match="refusing to replace"):
        st.save_pairs(0, review_pairs(5, seed=9))
    adapter = tmp_path / "round_0" / "adapter"
    adapter.mkdir(parents=True)
    st.mark_trained(0, adapter, loss=0.5)
    st.save_metrics(0, {"round": 0, "win_rate": 0.6})
    st.save_metrics(1, {"round": 1, "win_rate": 0.7})
    st.save_metrics(0, {"round": 0, "win_rate": 0.65})  # a redone round replaces its line

    again = RunState(tmp_path)
    assert again.exists
    assert [p.id for p in again.pairs(0)] == [p.id for p in pairs]
    assert again.pairs(0)[0].a.token_ids == pairs[0].a.token_ids
    assert again.trained(0)["adapter"] == adapter and again.trained(0)["loss"] == 0.5
    assert again.trained(1) is None and again.last_trained()[0] == 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"round": 0, "win_rate": 0.65}, {"round": 1, "win_rate": 0.7}]
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]
    assert again.acquired_rounds() == [0]
    assert round_seed(0, 1) == round_seed(0, 1) != round_seed(0, 2) != round_seed(1, 1)


def test_the_run_clock_goes_on_across_resumes(tmp_path):
    """wall_seconds (the summary's, and the budget's limit) counts every process of the run."""
    st = RunState(tmp_path)
    time.sleep(0.2)
    st.save_metrics(0, {"round": 0})  # each save records the run's time so far
    again = RunState(tmp_path)
    assert again.elapsed_before >= 0.2 and again.elapsed() >= 0.2
    budget = Budget(labels=10, wall_seconds=0.15)
    assert not budget.exhausted
    budget.count_elapsed(again.elapsed_before)  # what loop.build does on resume
    assert budget.exhausted and budget.stopped_by == "wall_seconds"
    assert budget.as_dict()["elapsed_s"] >= 0.2


def test_damaged_pairs_file_is_reported(tmp_path):
    st = RunState(tmp_path)
    st.save_pairs(2, review_pairs(3))
    path = st.pairs_path(2)
    lines = path.read_text().splitlines()
    d = json.loads(lines[1])
    d["a"]["token_ids"] = [99]
    path.write_text(lines[0] + "\n" + json.dumps(d) + "\n")
    with pytest.raises(RunStateError, match="does not match its content"):
        st.pairs(2)


def _cfg(**over) -> dict:
    cfg = {"seed": 0, "resume": None, "threads": 2, "ledger_cache": None,
           "policy": {"name_or_path": "tiny", "dtype": "float32"},
           "acquisition": {"_target_": "rlaif.acquisition.random.Random"},
           "oracle": {"_target_": "rlaif.oracle.openai.OpenAIOracle", "model": "gpt-4o-mini", "temperature": 0.05,
                      "concurrency": 16, "api_key_env": "OPENAI_API_KEY", "price_input_per_mtok": 0.15},
           "budget": {"labels": 192, "labels_per_round": 64, "dollars": None},
           "task": {"name": "imdb", "rubric": "imdb"}, "eval": {"prompts": 128}}
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def test_resume_refuses_a_label_changing_config(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    st = RunState(tmp_path)
    assert st.check_config(label_fingerprint(_cfg()), ledger=ledger) is False
    ledger.close()

    # allowed: limits, concurrency, prices, threads, evaluation, the resume path itself
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ok = _cfg(**{"budget.labels": 512, "oracle.concurrency": 64, "oracle.price_input_per_mtok": 0.2, "threads": 8,
                 "eval.prompts": 64, "resume": str(tmp_path)})
    assert RunState(tmp_path).check_config(label_fingerprint(ok), ledger=ledger) is True

    for key, value in [("oracle.model", "gpt-4o"), ("seed", 1), ("task.rubric", "tldr"),
                       ("acquisition._target_", "rlaif.acquisition.hybrid.Hybrid"), ("budget.labels_per_round", 128),
                       ("oracle.temperature", 0.7)]:
        with pytest.raises(ConfigChangedError, match=rf"refusing to resume .*\n  {key}: "):
            RunState(tmp_path).check_config(label_fingerprint(_cfg(**{key: value})), ledger=ledger)
    ledger.close()

    # the ledger alone (run state lost) also refuses
    (tmp_path / "state" / "state.json").unlink()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(ConfigChangedError, match="oracle.model"):
        RunState(tmp_path).check_config(label_fingerprint(_cfg(**{"oracle.model": "x"})), ledger=ledger)
    # ... and still counts as a resume (so the loop restores the spend)
    assert RunState(tmp_path).check_config(label_fingerprint(_cfg()), ledger=ledger) is True
    ledger.close()



def test_resume_with_an_empty_ledger_is_refused(tmp_path):
    """A zero-byte (or recreated) ledger would be taken as a fresh one: earlier rounds bought again."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    st = RunState(tmp_path)
    st.check_config(label_fingerprint(_cfg()), ledger=ledger)
    st.save_pairs(1, review_pairs(4))
    st.save_metrics(1, {"round": 1, "labels": 4})
    ledger.close()
    (tmp_path / "ledger.sqlite").write_bytes(b"")
    for f in tmp_path.glob("ledger.sqlite-*"):
        f.unlink()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(RunStateError, match=r"records 1 acquired round\(s\) and 4 labels but its ledger .* is "
                                                r"empty") as e:
            RunState(tmp_path).check_config(label_fingerprint(_cfg()), ledger=ledger)
        assert "\n" not in str(e.value)
        assert ledger.meta().get("config_fingerprint") is None  # the empty ledger was not adopted
    finally:
        ledger.close()


# -- reparse ---------------------------------------------------------------------------------------
LENIENT = '''
import re
def first_verdict(text):
    """A deliberately different parser: the FIRST 'Preferred: X' anywhere decides."""
    m = re.search(r"Preferred:\\s*([AB])", text or "")
    return (m.group(1), None) if m else ("invalid", "no verdict anywhere")
'''


def test_reparse_changes_labels_without_any_request(tmp_path, capsys):
    from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
    from rlaif.oracle.server import ServerSettings, ServerThread, create_app, judge_state, load_oracle

    app = create_app(load_oracle("keyword"), ServerSettings(model_name="judge"))
    state = judge_state(app)
    pairs = review_pairs(24)
    with ServerThread(app) as url:
        state.queue(["garbled"] * 6)  # six answers with no verdict on their final line
        oracle = OpenAIOracle(OpenAIConfig(base_url=url, model="judge", free=True, concurrency=1))
        run = tmp_path / "run"
        ledger = Ledger(run / "ledger.sqlite")
        RunState(run).save_pairs(0, pairs)
        labeler = Labeler(oracle, Budget(labels=100), ledger)
        labels = labeler.label(pairs)
        labeler.close()
        ledger.close()
        assert sum(l.outcome is Outcome.INVALID for l in labels) == 6
        before = state.stats()["requests"]
        assert before == 24

        parser = tmp_path / "lenient.py"
        parser.write_text(LENIENT)
        assert reparse_main([str(run), f"parser={parser}:first_verdict"]) == 0
        out = capsys.readouterr().out
        assert "6 outcomes changed" in out and "invalid->" in out and "no judge was called" in out
        ledger = Ledger(run / "ledger.sqlite")
        rows = ledger.rows()
        assert sum(r["outcome"] == "invalid" for r in rows) == 0 and len(ledger.reparses()) == 6
        prefs = [json.loads(x) for x in (run / "preferences.jsonl").read_text().splitlines()]
        assert len(prefs) == sum(r["outcome"] in ("A", "B") for r in rows)
        assert [p["pair_id"] for p in prefs] == [p.id for p in pairs if any(
            r["pair_id"] == p.id and r["outcome"] in ("A", "B") for r in rows)]  # acquisition order
        # swapped rows were mapped back: the lenient parser read "B" in the order shown
        for r in rows:
            if r["parser"]:
                assert r["outcome"] == ("A" if r["swapped"] else "B")
        ledger.close()

        # the fixed (current) parser again: back to invalid, still nothing asked
        assert reparse_main([str(run)]) == 0
        assert "6 outcomes changed" in capsys.readouterr().out
        # a resumed labeller gets the re-parsed answers from the ledger, free
        ledger = Ledger(run / "ledger.sqlite")
        labeler = Labeler(oracle, Budget(labels=100), ledger)
        again = labeler.label(pairs)
        labeler.close()
        ledger.close()
        assert all(l.cached for l in again) and sum(l.outcome is Outcome.INVALID for l in again) == 6
        assert state.stats()["requests"] == before  # reparse and the resume made no request

    assert reparse_main([str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


# -- kill -9 during labelling ------------------------------------------------------------------------
def label_run(run_dir, url, n, conc, max_labels, max_dollars) -> dict:
    """A small labelling job, as a run does it: resume-aware run state, ledger, budget, openai judge."""
    from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
    from rlaif.run.state import atomic_write_text
    from rlaif.types import preference_row

    run_dir, n, conc, max_labels, max_dollars = Path(run_dir), int(n), int(conc), int(max_labels), float(max_dollars)
    ocfg = OpenAIConfig(base_url=url, model="judge", api_key_env="RLAIF_KILL_TEST_KEY", price_input_per_mtok=1.0,
                        price_output_per_mtok=4.0, concurrency=conc, max_attempts=3, timeout_s=30)
    ledger = Ledger(run_dir / "ledger.sqlite")
    state = RunState(run_dir)
    state.check_config(label_fingerprint({"seed": 0, "task": "kill-test", "n": n, "oracle": vars(ocfg)}),
                       ledger=ledger)
    pairs = state.pairs(0)
    if pairs is None:
        pairs = review_pairs(n)
        state.save_pairs(0, pairs)
    budget = Budget(labels=max_labels, dollars=max_dollars)
    budget.restore(ledger)
    labeler = Labeler(OpenAIOracle(ocfg), budget, ledger)
    labeler.check()
    print("READY " + json.dumps({"recovered": len(ledger.recovered)}), flush=True)
    labels = labeler.label(pairs)
    rows = [preference_row(p, l) for p, l in zip(pairs, labels) if l is not None]
    atomic_write_text(run_dir / "preferences.jsonl", "".join(json.dumps(r) + "\n" for r in rows if r))
    done = {"budget": budget.as_dict(), "stats": labeler.last_stats, "missing": sum(l is None for l in labels)}
    labeler.close()
    ledger.close()
    return done


SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[7])
from test_resume import label_run
print("DONE " + json.dumps(label_run(*sys.argv[1:7])), flush=True)
'''


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _inspect(path: Path) -> dict:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {"pending": {r[0] for r in db.execute("SELECT id FROM pending")},
                "rows": db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]}
    finally:
        db.close()


def _prefs(run: Path) -> list[tuple]:
    return [(r["pair_id"], r["outcome"], r["chosen"], r["rejected"], r["swapped"])
            for r in map(json.loads, (run / "preferences.jsonl").read_text().splitlines())]


def test_kill_9_during_labelling_loses_nothing_and_never_pays_twice(tmp_path, monkeypatch):
    N, CONC, KILLS = 260, 8, 10
    env = rlaif_env(RLAIF_KILL_TEST_KEY="sk-kill-test-0123456789")
    script = tmp_path / "label_run.py"
    script.write_text(SCRIPT)
    rng = random.Random(20240611)
    with serve_judge("--latency-ms", "150", "--latency-jitter-ms", "100", env=env) as base:

        def launch(run: Path, dollars: float) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, str(script), str(run), base + "/v1", str(N), str(CONC), str(N),
                                     str(dollars), str(Path(__file__).parent)], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish(proc: subprocess.Popen) -> dict:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            return json.loads(out.strip().splitlines()[-1].removeprefix("DONE "))

        # an uninterrupted run of the same seed (in this process): what the killed run must end up with
        monkeypatch.setenv("RLAIF_KILL_TEST_KEY", env["RLAIF_KILL_TEST_KEY"])
        ref = tmp_path / "reference"
        ref_done = label_run(ref, base + "/v1", N, CONC, N, 10.0)
        assert ref_done["missing"] == 0
        ref_dollars = ref_done["budget"]["dollars"]
        _post(base + "/admin/reset", {})

        # worst case of one request, for a dollar limit the lost in-flight requests could exceed if uncounted
        from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
        worst = max(OpenAIOracle(OpenAIConfig(base_url=base, model="judge", price_input_per_mtok=1.0,
                                              price_output_per_mtok=4.0)).worst_case(p).dollars for p in review_pairs(N))
        # every kill (also those that land outside labelling) may lose up to 2 * CONC requests (the
        # Labeler's pipeline), charged at their worst case: leave room for all of them so the budget
        # never decides the outcome
        MAX_KILLS = 40
        limit = ref_dollars + MAX_KILLS * 2 * CONC * worst
        run = tmp_path / "run"
        in_flight_at_kill: list[int] = []
        seen_pending: set[int] = set()
        kills_in_labelling = 0
        k = 0
        while kills_in_labelling < KILLS:
            k += 1
            assert k < MAX_KILLS, "the run finished before enough kills landed"
            proc = launch(run, limit)
            if k % 5 == 0:  # now and then: any moment at all (start-up, restore, check)
                time.sleep(rng.uniform(0.0, 2.5))
                labelling = False
            else:
                line = proc.stdout.readline()
                assert line.startswith("READY"), proc.stderr.read()[-3000:]
                time.sleep(rng.uniform(0.05, 0.3))
                labelling = True
            if proc.poll() is not None:
                out = proc.stdout.read()
                assert proc.returncode == 0 and "DONE" in out, proc.stderr.read()[-3000:]
                pytest.fail("the run finished before it could be killed; make N larger")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            if (run / "ledger.sqlite").exists():
                seen = _inspect(run / "ledger.sqlite")
                new = seen["pending"] - seen_pending  # (a kill before recovery leaves the previous ones)
                seen_pending |= seen["pending"]
                # in flight at the kill: at most the pipeline (the calls in flight, capped at CONC,
                # and as many pending rows committed ahead of a free call slot)
                assert len(new) <= 2 * CONC
                in_flight_at_kill.append(len(new))
                kills_in_labelling += labelling and seen["rows"] < N

        assert sum(in_flight_at_kill) > 0  # kills did land mid-request
        done = finish(launch(run, limit))
        assert done["missing"] == 0
        # a further resume asks nothing at all
        requests_before = _get(base + "/stats")["requests"]
        again = label_run(run, base + "/v1", N, CONC, N, limit)
        assert again["stats"]["paid"] == 0 and again["stats"]["cached"] == N
        stats = _get(base + "/stats")
        assert stats["requests"] == requests_before

        ledger = Ledger(run / "ledger.sqlite")
        rows, lost, t = ledger.rows(), ledger.lost(), ledger.totals()
        # every committed label appears once
        assert len(rows) == len({r["key"] for r in rows}) == len({r["pair_id"] for r in rows}) == N
        assert ledger.pending() == []
        # every request in flight at a kill was recovered (and charged) on the next start
        assert len(lost) == sum(in_flight_at_kill)
        # the server saw at most the in-flight requests more than the ledger's paid rows
        assert t["paid"] == N
        assert 0 <= stats["requests"] - t["paid"] <= sum(in_flight_at_kill)
        assert stats["duplicate_paid"] <= len(lost)
        # no limit exceeded, lost requests counted in the spend
        assert t["spent_dollars"] == pytest.approx(t["dollars"] + t["lost_dollars"])
        assert t["spent_dollars"] <= limit
        assert done["budget"]["labels"] == N and done["budget"]["peak"]["labels"] <= N
        assert done["budget"]["peak"]["dollars"] <= limit + 1e-12
        ledger.close()
        # the final preference set is complete: exactly the uninterrupted run's
        assert _prefs(run) == _prefs(ref)
        assert len(_prefs(run)) == sum(r["outcome"] in ("A", "B") for r in rows)


# -- end to end: `rlaif run` killed and resumed ------------------------------------------------------
RUN = tiny("generator=vllm", "oracle=simulated", "budget.labels=24", "budget.labels_per_round=8", "eval.prompts=8",
           "task.train_prompts=64", "task.gold=null", "threads=1")


def _rlaif_run(args: list[str], hydra_dir: Path | None, **kw) -> subprocess.Popen:
    """A new run in ``hydra_dir``, or (None) ``rlaif run resume=RUN_DIR [changes]``: the directory alone."""
    # its own process group: the test can see whether anything of the run outlives it
    full = [*RUN, *args, f"hydra.run.dir={hydra_dir}"] if hydra_dir is not None else args
    return rlaif_popen("run", *full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def _ledger_rows(run: Path) -> list[dict]:
    led = Ledger(run / "ledger.sqlite", readonly=True)
    try:
        return led.rows()
    finally:
        led.close()


@pytest.mark.slow
def test_rlaif_run_killed_and_resumed_buys_the_same_labels(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    p = _rlaif_run([], ref)
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out[-3000:]

    # kill -9 once round 2's pairs are saved (labelling, training or evaluating round 2)
    p = _rlaif_run([], run)
    deadline = time.time() + 400
    while not (run / "state" / "round_0002.pairs.jsonl").exists():
        assert p.poll() is None, p.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(random.Random(7).uniform(0.0, 1.0))
    os.kill(p.pid, signal.SIGKILL)  # kill -9 of the main process alone, as the OOM killer does
    p.wait()
    p.stdout.close()
    # its vLLM engine processes (same process group) do not outlive it: the orphan guard stops them
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("vLLM engine processes outlived the killed run by 30 s")
    finally:
        kill_group(p.pid)  # whatever is left, so that the suite goes on clean
    before = {r["key"]: r for r in _ledger_rows(run)}
    assert before

    # a label-changing override is refused, with the key named
    p = _rlaif_run([f"resume={run}", "oracle.flip_rate=0.3"], None)
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 2 and "refusing to resume" in out and "oracle.flip_rate" in out, out[-3000:]

    p = _rlaif_run([f"resume={run}"], None)
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out[-3000:]
    after = _ledger_rows(run)
    assert len(after) == len({r["key"] for r in after})
    by_key = {r["key"]: r for r in after}
    for k, r in before.items():  # every label bought before the kill is still there, bought once
        assert by_key[k]["committed_at"] == r["committed_at"] and by_key[k]["outcome"] == r["outcome"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == 24 and summary["stopped_by"] == "labels"
    assert summary["wall_seconds"] > summary["session_seconds"] + 1  # the killed process's time counts
    train = [r for r in after if r["purpose"] == "train"]
    assert len(train) == 24
    # the same labels an uninterrupted run of the same seed bought
    ref_train = [r for r in _ledger_rows(ref) if r["purpose"] == "train"]
    assert sorted((r["pair_id"], r["outcome"]) for r in train) == sorted((r["pair_id"], r["outcome"]) for r in ref_train)
    strip = lambda path: [{k: v for k, v in json.loads(x).items() if k not in ("cached", "cost", "tokens_in",  # noqa: E731
                                                                            "tokens_out")}
                          for x in path.read_text().splitlines()]
    assert strip(run / "preferences.jsonl") == strip(ref / "preferences.jsonl")  # free ledger hits after resume
