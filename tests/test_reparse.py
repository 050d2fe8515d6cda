"""``rlaif reparse`` on the ledger of a real labelling run (the ``openai`` judge against serve-judge on
127.0.0.1): with the parser the run used it changes nothing, and no parser turns an answer cut off at
``max_tokens`` into a side."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rlaif.labels.budget import Budget
from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import Ledger
from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
from rlaif.oracle.server import ServerSettings, ServerThread, create_app, judge_state, load_oracle, pair_from_texts
from rlaif.labels.reparse import main as reparse_main
from rlaif.run.state import RunState

LAST_LETTER = '''
def last_letter(text):
    """A careless parser: the answer's last character, when it is a letter."""
    t = (text or "").strip()
    return (t[-1], None) if t[-1:] in ("A", "B") else ("invalid", "no letter at the end")
'''

# what each pair's requests get, in order (the rest are answered by the keyword judge)
FAULTS = [["truncated"], ["truncated:B"], ["garbled"], ["empty"], ["html"], ["500", "500"], ["ok", "truncated"],
          ["truncated:B", "ok"], ["ok", "html"], ["500", "500", "ok"]]


def _labelled_run(tmp_path, both_orders: bool):
    app = create_app(load_oracle("keyword"), ServerSettings(model_name="judge", retry_after_s=0.0))
    state = judge_state(app)
    pairs = [pair_from_texts(f"Review {i}:", f"#{i}# was great and fun", f"#{i}# was dull and awful")
             for i in range(16)]
    run = tmp_path / "run"
    with ServerThread(app) as url:
        for p, faults in zip(pairs, FAULTS):
            state.queue(faults, match=p.a.text)
        oracle = OpenAIOracle(OpenAIConfig(base_url=url, model="judge", free=True, concurrency=4, mode="logprobs",
                                           both_orders=both_orders, max_tokens=32, max_attempts=2,
                                           backoff_initial_s=0.01, backoff_max_s=0.02, backoff_jitter_s=0.0))
        ledger = Ledger(run / "ledger.sqlite")
        RunState(run).save_pairs(0, pairs)
        labeler = Labeler(oracle, Budget(labels=100), ledger, progress=False)
        labels = labeler.label(pairs)
        labeler.close()
        ledger.close()
    return run, pairs, labels


def _rows(run):
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        return {r["key"]: (r["outcome"], r["reason"], r["p_a"], r.get("finish_reason")) for r in ledger.rows()}


@pytest.mark.parametrize("both_orders", [False, True], ids=["one-order", "both-orders"])
def test_reparse_with_the_run_parser_changes_nothing(tmp_path, capsys, both_orders):
    run, pairs, labels = _labelled_run(tmp_path, both_orders)
    before = _rows(run)
    assert reparse_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "0 outcomes changed;" in out and "reasons changed" not in out, out
    assert _rows(run) == before
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        assert ledger.reparses() == []
    prefs = [json.loads(x) for x in (run / "preferences.jsonl").read_text().splitlines()]
    assert len(prefs) == sum(v[0] in ("A", "B") for v in before.values()) >= 6

    cut = [v for v in before.values() if "cut off at max_tokens" in (v[1] or "")]
    assert len(cut) == (4 if both_orders else 3)  # the cut-off answers (ending in a letter) are invalid
    assert all(v[0] == "invalid" and v[2] is None and "length" in v[3] for v in cut)

    # a parser that reads the last letter: the cut-off answers stay invalid, with the live reason
    parser = tmp_path / "careless.py"
    parser.write_text(LAST_LETTER)
    assert reparse_main([str(run), f"parser={parser}:last_letter"]) == 0
    assert "0 outcomes changed" in capsys.readouterr().out
    after = _rows(run)
    assert [after[k] for k, v in before.items() if v in cut] == cut
    assert all(after[k] == v for k, v in before.items() if "not a chat completion" in (v[1] or ""))


def test_a_schema_2_ledger_is_migrated_and_its_rows_parse_as_before(tmp_path, capsys):
    run, _, _ = _labelled_run(tmp_path, False)
    db = sqlite3.connect(run / "ledger.sqlite")  # as rlaif wrote it before finish reasons were stored
    db.execute("ALTER TABLE labels DROP COLUMN finish_reason")
    db.execute("DROP TABLE answers")
    db.execute("UPDATE meta SET v='2' WHERE k='schema'")
    db.commit()
    db.close()
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:  # read as it is: no finish reason known
        rows = ledger.rows()
        assert ledger.meta()["schema"] == "2" and "finish_reason" not in rows[0]
        assert ledger.get(rows[0]["key"]).finish_reason is None
    assert reparse_main([str(run), "dry_run=true"]) == 0
    # unknown finish reasons: the three cut-off answers are read as before (by their last letter)
    out = capsys.readouterr().out
    assert "3 outcomes changed: invalid->" in out and "->invalid" not in out, out
    with Ledger(run / "ledger.sqlite") as ledger:
        assert ledger.meta()["schema"] == "4"
        assert {r["finish_reason"] for r in ledger.rows()} == {None}
