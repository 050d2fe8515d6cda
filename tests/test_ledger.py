"""The SQLite label ledger: keys, atomic rows, crash recovery, and refusing files that are not ours."""

from __future__ import annotations

import sqlite3

import pytest

from rlaif.labels.ledger import ConfigChangedError, Ledger, LedgerError, request_key
from rlaif.types import Completion, Label, Outcome, Pair, Part, Prompt, Spend


def pair(i: int = 0, a: str = "good", b: str = "bad") -> Pair:
    p = Prompt(f"p{i}", f"prompt {i}", (1, i))
    return Pair(p, Completion(p, f"{a} {i}", (2, i)), Completion(p, f"{b} {i}", (3, i)))


IDENT = {"kind": "openai", "model": "m", "base_url": "http://x/v1", "template_hash": "abc", "temperature": 0.05}


def test_key_covers_identity_prompt_completions_and_order():
    p = pair()
    k = request_key(IDENT, p, False)
    assert k == request_key(dict(IDENT), p, False)
    assert k != request_key({**IDENT, "model": "m2"}, p, False)
    assert k != request_key({**IDENT, "template_hash": "def"}, p, False)
    assert k != request_key(IDENT, p, True)  # order shown
    assert k == request_key(IDENT, p.swapped(), True)  # same texts shown in the same order
    assert k != request_key(IDENT, pair(a="great"), False)
    lab = Label(outcome=Outcome.A, p_a=0.9, swapped=False)
    flipped = lab.oriented(True)
    assert flipped.outcome is Outcome.B and flipped.p_a == pytest.approx(0.1) and flipped.swapped


def test_rows_are_unique_wal_and_roundtrip(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    assert led.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    p = pair()
    k = request_key(IDENT, p, True)
    lab = Label(outcome=Outcome.B, raw="Preferred: A", swapped=True, tokens_in=10, tokens_out=3, cost=0.001,
                latency=0.2, attempts=2, judge="openai")
    assert led.put(k, IDENT, p, lab) is True
    assert led.put(k, IDENT, p, Label(outcome=Outcome.A, raw="other")) is False  # first answer wins
    got = led.get(k)
    assert got.outcome is Outcome.B and got.swapped and got.raw == "Preferred: A" and got.attempts == 2
    assert k in led and led.totals()["rows"] == 1 and led.totals()["dollars"] == pytest.approx(0.001)
    r = led.rows()[0]
    assert r["prompt"] == p.prompt.text and r["completion_a"] == p.a.text and r["started_at"] <= r["committed_at"]
    led.close()


def test_finish_reason_is_kept_and_a_schema_2_ledger_is_migrated(tmp_path):
    f = tmp_path / "cache.sqlite"
    led = Ledger(f, role="cache")
    cut, ok = pair(1), pair(2)
    led.put(request_key(IDENT, cut), IDENT, cut, Label(outcome=Outcome.INVALID, reason="cut off", raw="A: A\n\nA",
                                                      finish_reason="length", tokens_out=96, cost=0.01))
    assert led.get(request_key(IDENT, cut)).finish_reason == "length"
    assert led.rows()[0]["finish_reason"] == "length" and led.meta()["schema"] == "4"
    led.close()
    db = sqlite3.connect(f)  # the file as a schema-2 rlaif wrote it: no finish_reason column, no answers table
    db.execute("ALTER TABLE labels DROP COLUMN finish_reason")
    db.execute("DROP TABLE answers")
    db.execute("UPDATE meta SET v='2' WHERE k='schema'")
    db.commit()
    db.close()
    with Ledger(f, role="cache", readonly=True) as old:  # read as it is
        assert old.get(request_key(IDENT, cut)).finish_reason is None and old.meta()["schema"] == "2"
    led = Ledger(f, role="cache")  # migrated on open; old rows: finish reason unknown (NULL)
    assert led.meta()["schema"] == "4" and led.get(request_key(IDENT, cut)).finish_reason is None
    led.put(request_key(IDENT, ok), IDENT, ok, Label(outcome=Outcome.A, raw="Preferred: A", finish_reason="stop"))
    assert [r["finish_reason"] for r in led.rows()] == [None, "stop"] and led.totals()["dollars"] == 0.01
    led.close()
    Ledger(f, role="cache").close()  # opening again changes nothing


def test_a_composite_label_keeps_each_answer_as_its_own_row_with_its_cost(tmp_path):
    f = tmp_path / "ledger.sqlite"
    led = Ledger(f)
    p, k = pair(), "k-panel"
    parts = (Part("member", "id-big", Label(outcome=Outcome.A, p_a=0.8, raw="A", cost=0.03, tokens_in=100,
                                            tokens_out=2, judge="big")),
             Part("member", "id-small", Label(outcome=Outcome.INVALID, reason="garbled", raw="??", cost=0.001,
                                              tokens_in=100, tokens_out=9, judge="small", finish_reason="length")))
    failed = Label(outcome=Outcome.INVALID, reason="no answer", cost=0.031, judge="panel", parts=parts)
    led.fail(k, p, failed, "train")  # a request that got no label: its members' answers were still paid
    lab = Label(outcome=Outcome.A, raw='{"panel": "majority"}', cost=0.031, tokens_in=200, tokens_out=11,
                judge="panel", parts=parts)
    assert led.put(k, {"kind": "panel"}, p, lab)
    assert not led.put(k, {"kind": "panel"}, p, lab)  # a key is answered once: its answers are not written twice
    rows = led.answers(k)
    assert [(r["judge"], r["of"], r["position"]) for r in rows] == [
        ("big", "failed", 0), ("small", "failed", 1), ("big", "label", 0), ("small", "label", 1)]
    assert rows[3]["finish_reason"] == "length" and rows[3]["outcome"] == "invalid" and rows[2]["cost"] == 0.03
    got = led.parts([k])[k]
    assert [x.label.judge for x in got] == ["big", "small"] and got[0].label.p_a == 0.8 and got[1].identity == "id-small"
    other = pair(1)  # a single judge's row beside it
    led.put("k-one", IDENT, other, Label(outcome=Outcome.B, raw="B", cost=0.5, tokens_in=7, judge="openai"))
    judges = led.totals()["judges"]
    assert judges == {"big": {"answers": 2, "invalid": 0, "dollars": pytest.approx(0.06), "tokens": 204},
                      "small": {"answers": 2, "invalid": 2, "dollars": pytest.approx(0.002), "tokens": 218},
                      "openai": {"answers": 1, "invalid": 0, "dollars": 0.5, "tokens": 7}}
    assert led.totals()["spent_dollars"] == pytest.approx(0.031 + 0.031 + 0.5)  # the labels' sums, as before
    led.close()
    db = sqlite3.connect(f)  # a schema-3 ledger (before answers rows) is migrated on open
    db.execute("DROP TABLE answers")
    db.execute("UPDATE meta SET v='3' WHERE k='schema'")
    db.commit()
    db.close()
    with Ledger(f, readonly=True) as old:
        assert old.answers() == [] and old.parts([k]) == {} and old.totals()["judges"]["panel"]["answers"] == 2
    with Ledger(f) as led:
        assert led.meta()["schema"] == "4" and led.answers() == []


def test_bulk_lookup_and_group_writes(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    ps = [pair(i) for i in range(1203)]
    keys = [request_key(IDENT, p) for p in ps]
    pend = led.write_many([("begin", (k, p, "train", "openai", Spend(1, 0.01, 100)), {}) for k, p in zip(keys, ps)])
    assert len(led.pending()) == 1203 and len(set(pend)) == 1203
    res = led.write_many([("put", (k, IDENT, p, Label(outcome=Outcome.A if i % 2 else Outcome.B, raw="x")),
                           {"pending_id": pid}) for i, (k, p, pid) in enumerate(zip(keys, ps, pend))][:1000])
    assert res == [True] * 1000 and len(led.pending()) == 203
    got = led.get_many(keys + ["nope"])  # more keys than one query takes
    assert len(got) == 1000 and got[keys[1]].outcome is Outcome.A and got[keys[2]].outcome is Outcome.B
    # all or nothing: a bad write in a group commits none of it
    with pytest.raises(ValueError):
        led.write_many([("put", (keys[1001], IDENT, ps[1001], Label(outcome=Outcome.A)), {}), ("drop", (), {})])
    assert keys[1001] not in led
    led.close()


def test_pending_rows_of_a_dead_process_become_lost(tmp_path):
    path = tmp_path / "ledger.sqlite"
    led = Ledger(path)
    p = pair()
    pid = led.begin("k1", p, "train", "openai", Spend(1, 0.02, 900))
    led.begin("k2", pair(1), "train", "openai", Spend(1, 0.03, 900))
    led.put("k1", IDENT, p, Label(outcome=Outcome.A, raw="x"), pending_id=pid)  # answered: pending dropped
    assert len(led.pending()) == 1
    led.close()  # stands for kill -9: the other request never got its answer
    led = Ledger(path)
    assert [r["key"] for r in led.recovered] == ["k2"]
    assert led.pending() == [] and [r["key"] for r in led.lost()] == ["k2"]
    t = led.totals()
    assert t["lost"] == 1 and t["lost_dollars"] == pytest.approx(0.03) and t["spent_dollars"] == pytest.approx(0.03)
    led.close()


def test_one_process_at_a_time(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(LedgerError, match="in use by another process"):
        Ledger(tmp_path / "ledger.sqlite")
    led.close()
    Ledger(tmp_path / "ledger.sqlite").close()


def test_not_sqlite_is_refused(tmp_path):
    f = tmp_path / "ledger.sqlite"
    f.write_text("prompt,chosen,rejected\nhello,a,b\n")
    with pytest.raises(LedgerError, match="not an rlaif ledger: not a SQLite database"):
        Ledger(f)
    assert f.read_text().startswith("prompt,chosen")  # untouched


def test_foreign_sqlite_is_refused_and_left_untouched(tmp_path):
    f = tmp_path / "other.db"
    db = sqlite3.connect(f)
    db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"SQLite database but not an rlaif ledger \(tables: users\)"):
        Ledger(f)
    db = sqlite3.connect(f)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["users"]
    db.close()


def test_other_schema_and_role_are_refused(tmp_path):
    f = tmp_path / "ledger.sqlite"
    Ledger(f).close()
    with pytest.raises(LedgerError, match="is a run ledger, not a shared cache"):
        Ledger(f, role="cache")
    db = sqlite3.connect(f)
    db.execute("UPDATE meta SET v='99' WHERE k='schema'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="schema 99 is not the supported"):
        Ledger(f)


def _filled_ledger(f) -> bytes:
    """A closed ledger at ``f`` with 300 rows, many pages long; its bytes."""
    led = Ledger(f)
    for i in range(300):
        p = pair(i, a="x" * 200)
        led.put(request_key(IDENT, p), IDENT, p, Label(outcome=Outcome.A, raw="y" * 300))
    led.close()  # checkpoints the WAL into the main file
    return f.read_bytes()


def test_corrupt_ledger_is_refused(tmp_path):
    f = tmp_path / "ledger.sqlite"
    data = bytearray(_filled_ledger(f))
    assert len(data) > 8 * 4096
    for off in range(4096 * 2, len(data), 4096):  # scribble over every page after the schema
        data[off:off + 64] = b"\xde\xad\xbe\xef" * 16
    f.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="corrupt|not a usable rlaif ledger"):
        Ledger(f)


def test_truncated_ledger_is_refused(tmp_path):
    f = tmp_path / "ledger.sqlite"
    data = _filled_ledger(f)
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(LedgerError, match="corrupt|not a usable rlaif ledger"):
        Ledger(f)


def test_config_fingerprint_in_meta(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    fp = {"seed": 0, "oracle.model": "gpt-4o-mini", "acquisition._target_": "random"}
    led.check_config(fp)
    led.check_config(dict(fp))
    with pytest.raises(ConfigChangedError, match=r'oracle.model: "gpt-4o-mini" -> "gpt-4o"'):
        led.check_config({**fp, "oracle.model": "gpt-4o"})
    led.check_config({**fp, "oracle.model": "gpt-4o"}, allow_changed=True)
    led.close()
