"""In-flight de-duplication across runs: a request one run is buying is waited for by another run asking
the same key and then taken from the shared store free -- SQLite (one machine) and PostgreSQL. Real
processes (``benchmarks/shared_store.py worker``), a real PostgreSQL (pgserver; those cases are
skipped without it), a judge with latency that logs every request it receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import ROOT, make_pairs

from rlaif.labels.ledger import Ledger
from rlaif.labels.shared_sqlite import SqliteStore, pid_alive
from rlaif.types import Label, Outcome

sys.path.insert(0, str(ROOT / "benchmarks"))
import shared_store as bench  # noqa: E402


@pytest.fixture(scope="module")
def pg_server():
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    with tempfile.TemporaryDirectory() as d:
        server = pgserver.get_server(Path(d) / "pg", cleanup_mode="stop")
        yield server
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """``store() -> spec``: a new, empty shared store of either kind."""
    n = [0]

    def new() -> str:
        n[0] += 1
        if request.param == "sqlite":
            return str(tmp_path / f"cache{n[0]}.sqlite")
        import psycopg

        server = request.getfixturevalue("pg_server")
        name = f"d{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}_{n[0]}"
        with psycopg.connect(server.get_uri(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return server.get_uri(name)

    return new


def test_two_runs_at_once_pay_each_request_once(store, tmp_path):
    r = bench.two_runs(store(), tmp_path / "w", n=64, latency=0.2, concurrency=8)
    assert r["judge_calls"] == 64 and r["distinct"] == 64 and r["paid_twice"] == 0
    assert r["labelled"] == [64, 64]
    assert sum(x["paid"] for x in r["runs"]) == 64 and r["from_store"] == 64


def test_without_claims_both_runs_pay(store, tmp_path):
    """The figure before: a plain cache pays most requests twice when two runs ask at once."""
    r = bench.two_runs(store(), tmp_path / "w", n=64, latency=0.2, concurrency=8, no_dedup=True)
    assert r["judge_calls"] > 64 + 32 and r["labelled"] == [64, 64]


def test_a_holder_killed_mid_call_does_not_block_the_other_run(store, tmp_path):
    spec, log = store(), tmp_path / "calls.log"
    holder = bench.start_worker(spec, tmp_path / "a", log, n=64, latency=0.2, concurrency=4,
                                start_at=time.time(), hang=True)
    try:
        deadline = time.monotonic() + 60
        while sum(bench.calls(log).values()) < 4:  # its 4 first requests are claimed and sent, never answered
            assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read()
            time.sleep(0.05)
        other = bench.start_worker(spec, tmp_path / "b", log, n=64, latency=0.05, concurrency=8,
                                   start_at=time.time())
        while sum(bench.calls(log).values()) < 64:  # it buys the 60 others, and waits on the 4 the holder claimed
            assert other.poll() is None and time.monotonic() < deadline + 60, other.stderr.read()
            time.sleep(0.05)
        time.sleep(1.0)
        assert other.poll() is None and sum(bench.calls(log).values()) == 64
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err[-3000:]
    run = json.loads(out.strip().splitlines()[-1])
    assert run["labelled"] == 64 and run["paid"] == 64
    c = bench.calls(log)
    assert sum(c.values()) == 68 and sum(v == 2 for v in c.values()) == 4  # the 4 the dead holder never answered


def test_claims_wait_answer_or_free(store, tmp_path):
    """The store's protocol: a key claimed by one run is busy for another; answered -> a hit; let go
    without an answer (invalid, failed) -> the other claims it."""
    from rlaif.labels.labeler import open_shared

    spec = store()
    a, b = open_shared(spec), open_shared(spec)
    pair = make_pairs(1)[0]
    try:
        assert a.acquire(["k1", "k2"]) == ({}, {"k1", "k2"})
        assert a.claim(["k1"]) == set()  # held here already (another call of the same labeler waits)
        assert b.acquire(["k1", "k2"]) == ({}, set())  # busy
        a.put("k1", {"kind": "x"}, pair, Label(outcome=Outcome.A, raw="A"), "train")
        a.release(["k1", "k2"])  # k2: no shared answer (invalid)
        hits, claimed = b.acquire(["k1", "k2"])
        assert set(hits) == {"k1"} and claimed == {"k2"}
        assert a.acquire(["k2"]) == ({}, set())
    finally:
        a.close()
        b.close()
    with open_shared(spec) as c:  # closing let go of b's claim
        assert c.acquire(["k2"])[1] == {"k2"}


def test_a_sqlite_claim_of_a_dead_process_is_stale(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid) and pid_alive(os.getpid(), time.time())
    assert not pid_alive(os.getpid(), time.time() - 3600 * 24 * 365 * 30)  # a pid reused since the claim
    with SqliteStore(tmp_path / "cache.sqlite") as s:
        s.ledger.db.execute("INSERT INTO inflight VALUES ('dead', ?, ?, ?, 'x')", (p.pid, s._host, time.time()))
        s.ledger.db.execute("INSERT INTO inflight VALUES ('live', ?, ?, ?, 'y')", (os.getpid(), s._host, time.time()))
        s.ledger.db.execute("INSERT INTO inflight VALUES ('far', 1, 'other-host', ?, 'z')", (time.time(),))
        assert s.claim(["dead", "live", "far", "new"]) == {"dead", "new"}
        assert {h["key"] for h in s.holders()} == {"dead", "live", "far", "new"}
        s.release(["dead", "new", "live"])
        assert {h["key"] for h in s.holders()} == {"live", "far"}  # only its own claims are freed
    assert Ledger(tmp_path / "cache.sqlite", role="cache").totals()["rows"] == 0
