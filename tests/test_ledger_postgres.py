"""The shared label store in PostgreSQL (``ledger_cache=postgresql://...``), against a real PostgreSQL 16
started here (pgserver, no root); skipped where pgserver or psycopg is not installed."""

from __future__ import annotations

import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest

import helpers
from helpers import CostlyConfig, CostlyOracle, CountingConfig, CountingOracle, free_port, make_pairs

from rlaif.labels.budget import Budget
from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import LABEL_ROW_COLS, Ledger, LedgerError
from rlaif.types import Label, Outcome

pgserver = pytest.importorskip("pgserver")
psycopg = pytest.importorskip("psycopg")

from rlaif.labels.ledger_pg import PgStore  # noqa: E402
from rlaif.labels.shared_store import redact_url  # noqa: E402

PW = "S3cretPassw0rd-9f8e7d"


@pytest.fixture(scope="module")
def pg():
    """``pg(name) -> URL`` of a new, empty database on one server started for this module."""
    with tempfile.TemporaryDirectory() as d:  # (pgserver's own user must reach it: not pytest's 0700 tmp)
        server = pgserver.get_server(Path(d) / "pg", cleanup_mode="stop")

        def new_db(name: str) -> str:
            with psycopg.connect(server.get_uri(), autocommit=True) as c:
                c.execute(f"CREATE DATABASE {name}")
            return server.get_uri(name)

        yield new_db
        server.cleanup()


def with_password(url: str) -> str:
    """pgserver's URL (``postgresql://postgres:@/db?host=...``, trust auth) with a password written in."""
    assert url.startswith("postgresql://postgres:@")
    return url.replace("postgresql://postgres:@", f"postgresql://postgres:{PW}@", 1)


def test_put_get_round_trip(pg):
    url = pg("roundtrip")
    pairs = make_pairs(3)
    lab = Label(outcome=Outcome.B, reason=None, p_a=0.25, raw="Preferred: B", swapped=True, tokens_in=12,
                tokens_out=3, cost=0.002, latency=0.5, attempts=2, judge="j", finish_reason="stop")
    with PgStore(url) as s:
        assert s.get("k1") is None and s.get_many([]) == {}
        assert s.put("k1", {"kind": "x"}, pairs[0], lab, "train", source="run:/tmp/r1/ledger.sqlite")
        assert not s.put("k1", {"kind": "x"}, pairs[1], Label(outcome=Outcome.A), "train")  # the first wins
        s.put("k2", {"kind": "x"}, pairs[2], Label(outcome=Outcome.TIE, raw="tie"), "eval")
    with PgStore(url) as s:  # opened again: the tables are there, the rows too
        got = s.get("k1")
        assert got == lab
        assert set(s.get_many(["k1", "k2", "k3"])) == {"k1", "k2"}
    with psycopg.connect(url) as c:
        cols = [r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE "
                                        "table_name='rlaif_labels' ORDER BY ordinal_position")]
        row = c.execute("SELECT pair_id, source, paid, prompt FROM rlaif_labels WHERE key='k1'").fetchone()
    assert cols == ["id", *LABEL_ROW_COLS]  # the SQLite ledger's label columns
    assert row == (pairs[0].id, "run:/tmp/r1/ledger.sqlite", 1, pairs[0].prompt.text)


def test_two_labelers_share_through_postgres(pg, tmp_path):
    url = pg("sharing")
    pairs = make_pairs(20)
    o1 = CountingOracle(CountingConfig(concurrency=4, invalid_every=5))
    with Ledger(tmp_path / "run1" / "ledger.sqlite") as l1:
        lab1 = Labeler(o1, Budget(labels=100), l1, shared=url)
        first = lab1.label(pairs)
        lab1.close()
    n_invalid = sum(l.outcome is Outcome.INVALID for l in first)
    assert n_invalid == 4 and sum(o1.requests.values()) == 20
    o2 = CountingOracle(CountingConfig(concurrency=4))
    with Ledger(tmp_path / "run2" / "ledger.sqlite") as l2:
        lab2 = Labeler(o2, Budget(labels=100), l2, shared=url)
        second = lab2.label(pairs)
        lab2.close()
        t = l2.totals()
        sources = {r["source"] for r in l2.rows() if not r["paid"]}
    # decisive answers come from the store (free); unparseable ones are not shared and are asked again
    assert sum(o2.requests.values()) == n_invalid
    assert [l.outcome for l in second if l.cached] == [l.outcome for l in first if l.outcome.decisive]
    assert t["rows"] == 20 and t["cached"] == 16 and t["paid"] == 4
    assert sources == {f"cache:{url}"}


def test_a_password_in_the_url_is_never_stored_logged_or_saved(pg, tmp_path, caplog):
    from rlaif.cli.common import redact
    from rlaif.registry import ConfigError
    from rlaif.run.startup import check_secret_value, redact_override

    url = with_password(pg("secret"))
    caplog.set_level(logging.DEBUG)
    with Ledger(tmp_path / "run" / "ledger.sqlite") as led:
        lab = Labeler(CountingOracle(CountingConfig()), Budget(labels=100), led, shared=url)
        lab.label(make_pairs(5))
        lab.close()
        lab2 = Labeler(CountingOracle(CountingConfig()), Budget(labels=100), Ledger(tmp_path / "r2.sqlite"),
                       shared=url)
        lab2.label(make_pairs(5))
        assert lab2.shared.name == redact_url(url) and PW not in lab2.shared.name
        lab2.close()
        lab2.ledger.close()
    for f in (tmp_path / "run" / "ledger.sqlite", tmp_path / "r2.sqlite"):
        with sqlite3.connect(f) as db:
            assert not [r for r in db.execute("SELECT * FROM labels") if PW in repr(r)]
        assert PW.encode() not in f.read_bytes()
    with psycopg.connect(url) as c:
        assert not [r for r in c.execute("SELECT * FROM rlaif_labels") if PW in repr(r)]
    assert PW not in caplog.text
    # the saved config and Hydra's record of the overrides: redacted; on the command line: refused
    assert PW not in repr(redact({"ledger_cache": url, "x": [url]}))
    assert PW not in redact_override(f"ledger_cache={url}")
    with pytest.raises(ConfigError, match="PGPASSWORD") as e:
        check_secret_value("ledger_cache", url)
    assert PW not in str(e.value)
    # an error message never shows it either
    with pytest.raises(LedgerError) as e:
        PgStore(f"postgresql://bob:{PW}@127.0.0.1:{free_port()}/db", connect_timeout=2)
    assert PW not in str(e.value) and "***" in str(e.value)


def test_unreachable_or_bad_url_is_refused_before_any_spend(tmp_path, monkeypatch):
    oracle = CostlyOracle(CostlyConfig())
    port = free_port()
    with Ledger(tmp_path / "ledger.sqlite") as led:
        t0 = time.monotonic()
        with pytest.raises(LedgerError, match=r"cannot use the PostgreSQL label store") as e:
            Labeler(oracle, Budget(labels=10, dollars=1.0), led, shared=f"postgresql://bob@127.0.0.1:{port}/labels")
        assert time.monotonic() - t0 < 10 and "\n" not in str(e.value)
        assert oracle.calls == 0 and led.totals()["rows"] == 0 and led.pending() == []
    from rlaif.registry import ConfigError
    from rlaif.run.startup import check_ledger_cache

    check_ledger_cache(f"postgresql://bob@127.0.0.1:{port}/labels")  # well-formed: reached at build time
    check_ledger_cache(str(tmp_path / "cache.sqlite"))
    for bad, words in ((f"postgresql://bob@h:port/db", "not a valid PostgreSQL URL"),
                       ("postgresql://bob@h:5432", "names no database"), ("mysql://bob@h/db", "unsupported URL")):
        with pytest.raises(ConfigError, match=words):
            check_ledger_cache(bad)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # psycopg not installed
    with pytest.raises(ConfigError, match=r"needs psycopg \(pip install"):
        check_ledger_cache(f"postgresql://bob@127.0.0.1:{port}/labels")


def test_rlaif_run_refuses_an_unreachable_store_in_one_line(tmp_path):
    run = tmp_path / "run"
    r = helpers.rlaif("run", *helpers.tiny("oracle=simulated", "task.gold=null", "threads=1"),
                      f"ledger_cache=postgresql://bob@127.0.0.1:{free_port()}/labels", f"hydra.run.dir={run}",
                      timeout=300, full_error=False)
    assert r.returncode == 2, r.stderr[-3000:]
    err = [x for x in r.stderr.splitlines() if x.startswith("rlaif: error:")]
    assert len(err) == 1 and "cannot use the PostgreSQL label store" in err[0] and "Traceback" not in r.stderr
    with sqlite3.connect(run / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    r = helpers.rlaif("run", *helpers.tiny("oracle=simulated", "task.gold=null"),
                      f"ledger_cache='{with_password('postgresql://postgres:@/db?host=/tmp')}'",
                      f"hydra.run.dir={tmp_path / 'run2'}", timeout=300, full_error=False)
    assert r.returncode == 2 and "PGPASSWORD" in r.stderr and PW not in r.stderr + r.stdout
    assert not (tmp_path / "run2" / "config.json").exists()


def test_a_server_that_goes_away_mid_run_degrades_and_comes_back(pg, caplog):
    """Look-ups miss, stores are skipped and claims are granted (warned) while the connection is gone;
    the next statement after ``retry_s`` connects again. Every paid label is in the run ledger first."""
    url = pg("flaky")
    pair = make_pairs(1)[0]
    with PgStore(url, retry_s=0.0) as s:
        s.put("k1", {"kind": "x"}, pair, Label(outcome=Outcome.A, raw="A"))
        assert s.claim(["k2"]) == {"k2"}
        with psycopg.connect(url, autocommit=True) as c:  # the server drops the store's session
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name='rlaif'")
        with caplog.at_level(logging.WARNING):
            assert s.get_many(["k1"]) == {}  # the failed statement: a miss, and a warning
        assert "the run goes on without the shared store" in caplog.text
        assert s.get("k1").outcome is Outcome.A  # connected again
        with PgStore(url) as other:  # the dead session's claim went with it
            assert other.claim(["k2"]) == {"k2"}
