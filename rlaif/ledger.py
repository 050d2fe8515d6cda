"""The label ledger: one SQLite row per judge request, committed before the label is used.

A request whose key (judge identity + prompt + both completions) is already in the ledger is
answered from it at no cost -- within a run, after a resume, and across runs when a shared
cache path is given.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from rlaif.types import Label, Pair

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    judge_identity TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    round INTEGER,
    purpose TEXT NOT NULL,
    prompt TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    pair_json TEXT NOT NULL,
    swapped INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    p_a REAL,
    raw TEXT,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency REAL NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_pair ON labels(pair_id);
"""


class LedgerError(RuntimeError):
    pass


def request_key(identity_hash: str, pair: Pair) -> str:
    h = hashlib.sha256()
    h.update(identity_hash.encode())
    h.update(pair.id.encode())
    return h.hexdigest()


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"{self.path} is not a usable rlaif ledger ({e}); move it away or pick another path") from None
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise LedgerError(f"{self.path}: ledger schema {row[0]} is not {SCHEMA_VERSION}")

    def get(self, key: str) -> Label | None:
        with self._lock:
            r = self.db.execute(
                "SELECT outcome, reason, p_a, raw, swapped, tokens_in, tokens_out, cost, latency, attempts, judge "
                "FROM labels WHERE key=?", (key,)).fetchone()
        if r is None:
            return None
        return Label(outcome=r[0], reason=r[1], p_a=r[2], raw=r[3], swapped=bool(r[4]), tokens_in=r[5],
                     tokens_out=r[6], cost=r[7], latency=r[8], attempts=r[9], judge=r[10])

    def put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train") -> None:
        """Commit one paid answer (a single transaction: there is never a half-row)."""
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO labels VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, label.judge, json.dumps(identity, sort_keys=True, default=str), pair.id, pair.round, purpose,
                 pair.prompt.text, pair.a.text, pair.b.text, json.dumps(pair.to_dict()), int(label.swapped),
                 label.outcome.value, label.reason, label.p_a, label.raw, label.tokens_in, label.tokens_out,
                 label.cost, label.latency, label.attempts, time.time()))

    def rows(self, purpose: str | None = None) -> list[dict]:
        with self._lock:
            cur = self.db.execute("SELECT * FROM labels" + (" WHERE purpose=?" if purpose else "") + " ORDER BY rowid",
                                  (purpose,) if purpose else ())
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def totals(self) -> dict:
        with self._lock:
            r = self.db.execute("SELECT COUNT(*), COALESCE(SUM(cost),0), COALESCE(SUM(tokens_in+tokens_out),0) "
                                "FROM labels").fetchone()
        return {"rows": r[0], "dollars": r[1], "tokens": r[2]}

    def close(self) -> None:
        with self._lock:
            self.db.close()
