"""The label ledger: one SQLite row per judge request, committed before the label is used.

A request is keyed by a hash of everything that decides the judge's answer: the judge's identity
(kind, model, endpoint, template content, answer-changing parameters -- never secrets), the prompt,
the two completions and the order they were shown in. A request whose key is already in the ledger
is answered from it at no cost -- within a run, after a resume, and across runs when a shared cache
(``role="cache"``) is given. A stored label is in its own pair's order: a pair that asked the same
request the other way round reads it back with :meth:`Label.oriented <rlaif.types.Label.oriented>`.

Crash safety (the file is SQLite in WAL mode with ``synchronous=FULL``):

* before a paid request leaves the process a *pending* row (its worst-case spend) is committed;
* the answer and the removal of its pending row are committed in one transaction, before the
  label is handed to the caller -- an interruption leaves either nothing or a whole row;
* a run ledger is held by one process at a time (an advisory ``flock`` on ``<file>.lock``, freed
  by the kernel even on ``kill -9``); pending rows found when it is opened again belong to
  requests that were in flight when the last process died: they move to the ``lost`` table and
  are charged to the budget at their worst case (the judge may have been paid for them).

A composite judge's label (a panel, a cascade) is one row of ``labels``, and each answer it was
made of is its own row of ``answers`` (same key, its position, role, judge, outcome in the pair's
order, cost, tokens, latency, raw output, finish reason), committed in the same transaction;
``totals()["judges"]`` is the spend per judge (a composite's members, not the composite).

Each row keeps the judge's ``finish_reason`` (why its answer ended: ``length`` = cut off at
``max_tokens``), so ``rlaif reparse`` sees a cut-off answer as the live path did. Schema 2
ledgers (without that column) are migrated on open; their rows' finish reason is NULL (unknown).

The ledger also stores the run's label-changing config fingerprint in its ``meta`` table
(:meth:`Ledger.check_config`), so a resume with a changed config is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlaif.errors import RlaifError
# ConfigChangedError lives with the fingerprint check; importable from here as before
from rlaif.run.fingerprint import ConfigChangedError, refuse_changed  # noqa: F401
from rlaif.types import Label, Outcome, Pair, Part, canonical_json

APP = "rlaif-ledger"
SCHEMA_VERSION = 4
_ANSWERS = """CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    judge TEXT NOT NULL,
    identity_hash TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    round INTEGER,
    purpose TEXT NOT NULL,
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
    finish_reason TEXT,
    committed_at REAL NOT NULL,
    of TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_key ON answers(key)"""
MIGRATIONS = {2: ["ALTER TABLE labels ADD COLUMN finish_reason TEXT"],  # from schema N to N+1
              3: _ANSWERS.split(";")}
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    judge TEXT NOT NULL,
    judge_identity TEXT NOT NULL,
    identity_hash TEXT NOT NULL,
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
    paid INTEGER NOT NULL,
    source TEXT NOT NULL,
    parser TEXT,
    reparsed_at REAL,
    started_at REAL,
    finished_at REAL,
    committed_at REAL NOT NULL,
    finish_reason TEXT
);
CREATE INDEX labels_pair ON labels(pair_id);
CREATE INDEX labels_round ON labels(round, purpose);
CREATE TABLE pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    round INTEGER,
    purpose TEXT NOT NULL,
    judge TEXT NOT NULL,
    worst_labels INTEGER NOT NULL,
    worst_dollars REAL NOT NULL,
    worst_tokens INTEGER NOT NULL,
    started_at REAL NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE lost (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    round INTEGER,
    purpose TEXT NOT NULL,
    judge TEXT NOT NULL,
    worst_labels INTEGER NOT NULL,
    worst_dollars REAL NOT NULL,
    worst_tokens INTEGER NOT NULL,
    started_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    lost_at REAL NOT NULL,
    why TEXT NOT NULL
);
CREATE TABLE failed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    round INTEGER,
    purpose TEXT NOT NULL,
    judge TEXT NOT NULL,
    reason TEXT,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency REAL NOT NULL,
    attempts INTEGER NOT NULL,
    at REAL NOT NULL
);
""" + _ANSWERS + """;
CREATE TABLE reparses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    old_outcome TEXT NOT NULL,
    new_outcome TEXT NOT NULL,
    old_reason TEXT,
    new_reason TEXT,
    parser TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_LABEL_COLS = ("outcome", "reason", "p_a", "raw", "swapped", "tokens_in", "tokens_out", "cost", "latency",
               "attempts", "judge", "finish_reason")


class LedgerError(RlaifError, RuntimeError):
    """The ledger file cannot be used (corrupt, foreign, wrong schema, in use)."""


def identity_digest(identity: dict | str) -> str:
    if isinstance(identity, str):
        return identity
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def request_key(identity: dict | str, pair: Pair, swapped: bool = False) -> str:
    """Key of one judge request: judge identity + prompt + both completions in the order shown.

    ``swapped`` is whether ``pair.b`` is shown first. The key depends on what the judge sees, so
    the same texts shown in the same order by the same judge share a key (and an answer) even
    when they come from a different pair object or run.
    """
    first, second = (pair.b, pair.a) if swapped else (pair.a, pair.b)
    h = hashlib.sha256()
    for part in ("rlaif-request-v2", identity_digest(identity), pair.prompt.text, first.text, second.text):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


# the columns of a label row, in the order :func:`label_row` gives them (the shared stores write the same)
LABEL_ROW_COLS = ("key", "judge", "judge_identity", "identity_hash", "pair_id", "round", "purpose", "prompt",
                  "completion_a", "completion_b", "pair_json", "swapped", "outcome", "reason", "p_a", "raw",
                  "tokens_in", "tokens_out", "cost", "latency", "attempts", "paid", "source", "parser",
                  "reparsed_at", "started_at", "finished_at", "committed_at", "finish_reason")


def label_row(key: str, identity: dict, pair: Pair, label: Label, purpose: str, *, paid: bool, source: str,
              started_at: float | None = None) -> tuple:
    """The values of one label row (:data:`LABEL_ROW_COLS`)."""
    now = time.time()
    return (key, label.judge or identity.get("kind", "?"), canonical_json(identity), identity_digest(identity),
            pair.id, pair.round, purpose, pair.prompt.text, pair.a.text, pair.b.text,
            canonical_json(pair.to_dict()),
            int(label.swapped), Outcome(label.outcome).value, label.reason, label.p_a, label.raw,
            int(label.tokens_in), int(label.tokens_out), float(label.cost), float(label.latency),
            int(label.attempts), int(paid), source, None, None,
            started_at if started_at is not None else now - float(label.latency or 0.0), now, now,
            label.finish_reason)


class Ledger:
    """A SQLite label ledger.

    ``role="run"`` (default): the run directory's own ledger, held by one process at a time;
    pending rows of a dead process are recovered into ``lost`` on open.
    ``role="cache"``: a shared cross-run cache, written by many processes (no lock, no pending).
    """

    def __init__(self, path: str | Path, role: str = "run", *, readonly: bool = False) -> None:
        if role not in ("run", "cache"):
            raise ValueError(f"ledger role must be 'run' or 'cache', got {role!r}")
        self.path = Path(path)
        self.role = role
        self.readonly = readonly
        self._lock = threading.RLock()
        self._lockfd: int | None = None
        self.recovered: list[dict] = []  # pending rows moved to `lost` on this open
        self._label_cols = _LABEL_COLS  # fewer in a read-only open of an older schema
        if readonly and not self.path.exists():
            raise LedgerError(f"{self.path}: no ledger there")
        if self.path.is_dir():
            raise LedgerError(f"{self.path} is a directory, not a ledger file")
        self._check_header()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if role == "run" and not readonly:
            self._take_lock()
        try:
            self._open()
        except BaseException:
            self._release_lock()
            raise
        if role == "run" and not readonly:
            self._recover_pending()

    # -- opening -----------------------------------------------------------------------------
    def _check_header(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head != SQLITE_MAGIC:
            raise LedgerError(f"{self.path} is not an rlaif ledger: not a SQLite database "
                              f"(starts with {head[:8]!r}). Move it away or choose another path.")

    def _take_lock(self) -> None:
        lockpath = str(self.path) + ".lock"
        fd = os.open(lockpath, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise LedgerError(f"{self.path} is in use by another process (pid {holder}): a run ledger is "
                              f"written by one process at a time. Wait for it to finish or stop it first.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lockfd = fd

    def _release_lock(self) -> None:
        if self._lockfd is not None:
            try:
                fcntl.flock(self._lockfd, fcntl.LOCK_UN)
            finally:
                os.close(self._lockfd)
                self._lockfd = None

    def _open(self) -> None:
        p = self.path
        try:
            if self.readonly:
                self.db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False,
                                          isolation_level=None, timeout=30)
            else:
                self.db = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA busy_timeout=30000")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"{p} is not a usable rlaif ledger: {e}. The file is corrupt or not SQLite; "
                              f"move it away or choose another path.") from None
        old = False  # an older schema, migrated below
        if not tables:
            if self.readonly:
                raise LedgerError(f"{p}: empty database, not an rlaif ledger")
            self._create()
        else:
            meta = {}
            if "meta" in tables:
                try:
                    meta = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
                except sqlite3.DatabaseError:
                    meta = {}
            if meta.get("app") != APP:
                self.db.close()
                raise LedgerError(f"{p} is a SQLite database but not an rlaif ledger (tables: "
                                  f"{', '.join(sorted(tables))}); refusing to write into it. "
                                  f"Move it away or choose another path.")
            old = meta.get("schema") != str(SCHEMA_VERSION)
            if old and not self._migratable(meta.get("schema")):
                self.db.close()
                raise LedgerError(f"{p}: ledger schema {meta.get('schema')} is not the supported "
                                  f"{SCHEMA_VERSION}; it was written by another rlaif version")
            if meta.get("role") != self.role:
                self.db.close()
                want = "a shared cache (role=cache)" if self.role == "cache" else "a run ledger"
                raise LedgerError(f"{p} is a {meta.get('role')} ledger, not {want}. A run's own ledger and "
                                  f"the shared cross-run cache (ledger_cache=...) must be different files.")
            try:
                ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as e:
                ok = str(e)
            if ok != "ok":
                self.db.close()
                raise LedgerError(f"{p} is corrupt (sqlite quick_check: {ok}). Its labels cannot be trusted; "
                                  f"move it away (or recover it with the sqlite3 CLI's .recover).")
            if old and self.readonly:  # left as it is: the columns it lacks read as NULL
                have = {r[1] for r in self.db.execute("PRAGMA table_info(labels)")}
                self._label_cols = tuple(c for c in _LABEL_COLS if c in have)
        if not self.readonly:
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LedgerError(f"{p}: cannot switch the ledger to WAL mode (got {mode})")
            self.db.execute("PRAGMA synchronous=FULL")
            if old:
                self._migrate(meta.get("schema"))

    @staticmethod
    def _migratable(schema: str | None) -> bool:
        try:
            version = int(schema or "")
        except ValueError:
            return False
        return version < SCHEMA_VERSION and all(v in MIGRATIONS for v in range(version, SCHEMA_VERSION))

    def _migrate(self, schema: str | None) -> None:
        """Bring an older ledger to this schema, in one transaction."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            # read again inside the transaction: another process may have migrated it meanwhile
            now = int(self.db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()[0])
            for v in range(now, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    self.db.execute(stmt)
            self.db.execute("UPDATE meta SET v=? WHERE k='schema'", (str(SCHEMA_VERSION),))
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.close()
            raise LedgerError(f"{self.path}: cannot migrate the ledger from schema {schema} to "
                              f"{SCHEMA_VERSION}: {e}") from None

    def _create(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                    [("app", APP), ("schema", str(SCHEMA_VERSION)), ("role", self.role),
                                     ("created_at", repr(time.time()))])
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: cannot create ledger: {e}") from None

    def _recover_pending(self) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute("SELECT * FROM pending ORDER BY id")
            cols = [c[0] for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            for r in rows:
                self._to_lost(r, "in flight when the process holding the ledger died")
            self.db.execute("COMMIT")
        self.recovered = rows

    def _to_lost(self, r: dict, why: str) -> None:
        self.db.execute(
            "INSERT INTO lost (key, pair_id, round, purpose, judge, worst_labels, worst_dollars, worst_tokens, "
            "started_at, pid, lost_at, why) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (r["key"], r["pair_id"], r["round"], r["purpose"], r["judge"], r["worst_labels"], r["worst_dollars"],
             r["worst_tokens"], r["started_at"], r["pid"], time.time(), why))
        self.db.execute("DELETE FROM pending WHERE id=?", (r["id"],))

    # -- meta / config fingerprint ------------------------------------------------------------
    def meta(self) -> dict:
        with self._lock:
            return dict(self.db.execute("SELECT k, v FROM meta").fetchall())

    def set_meta(self, k: str, v: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def check_config(self, fingerprint: dict, *, allow_changed: bool = False) -> bool:
        """Record the run's label-changing config, or refuse if the recorded one differs.

        Returns True when the ledger already had one (it belongs to a run being resumed).

        Raises :class:`~rlaif.run.fingerprint.ConfigChangedError` naming each changed key.
        ``allow_changed=True`` replaces the recorded fingerprint instead (the user takes responsibility).
        """
        old = self.meta().get("config_fingerprint")
        if old is not None and not allow_changed:
            refuse_changed(f"the run of the ledger {self.path}", json.loads(old), fingerprint)
        if old is None or allow_changed:
            self.set_meta("config_fingerprint", canonical_json(fingerprint))
        return old is not None

    # -- writing ------------------------------------------------------------------------------
    # Each write is one transaction; ``write_many`` commits several in one (one fsync): the
    # Labeler's group commit. Every write is durable when its call returns.
    def _tx(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                out = fn()
                self.db.execute("COMMIT")
                return out
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def write_many(self, ops: Sequence[tuple[str, tuple, dict]]) -> list[Any]:
        """Apply ``(method, args, kwargs)`` writes (``begin``, ``put``, ``fail``) in ONE transaction;
        their results in order. All or nothing: on an error none is committed."""
        fns = {"begin": self._begin, "put": self._put, "fail": self._fail}
        for name, _, _ in ops:
            if name not in fns:
                raise ValueError(f"write_many: unknown write {name!r}")
        return self._tx(lambda: [fns[name](*args, **kwargs) for name, args, kwargs in ops])

    def begin(self, key: str, pair: Pair, purpose: str, judge: str, worst: Any) -> int:
        """Commit a pending row for a paid request about to be sent; returns its id."""
        return self._tx(lambda: self._begin(key, pair, purpose, judge, worst))

    def _begin(self, key: str, pair: Pair, purpose: str, judge: str, worst: Any) -> int:
        if self.role != "run":
            raise LedgerError("pending requests are recorded in the run ledger, not the shared cache")
        cur = self.db.execute(
            "INSERT INTO pending (key, pair_id, round, purpose, judge, worst_labels, worst_dollars, "
            "worst_tokens, started_at, pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (key, pair.id, pair.round, purpose, judge, int(worst.labels), float(worst.dollars),
             int(worst.tokens), time.time(), os.getpid()))
        return int(cur.lastrowid)

    def forget(self, pending_ids: Iterable[int]) -> None:
        """Pending rows of requests that were never sent (cancelled before the call): deleted, not charged."""
        ids = [(int(p),) for p in pending_ids]
        if ids:
            self._tx(lambda: self.db.executemany("DELETE FROM pending WHERE id=?", ids))

    def abandon(self, pending_ids: Iterable[int], why: str) -> None:
        """A request that failed without an answer: its pending rows move to ``lost`` (charged)."""
        def go() -> None:
            for pid in pending_ids:
                cur = self.db.execute("SELECT * FROM pending WHERE id=?", (pid,))
                cols = [c[0] for c in cur.description]
                r = cur.fetchone()
                if r is not None:
                    self._to_lost(dict(zip(cols, r)), why[:500])
        self._tx(go)

    def put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train", *,
            paid: bool = True, source: str = "judge", pending_id: int | None = None,
            started_at: float | None = None) -> bool:
        """Commit one answer (and drop its pending row) in a single transaction.

        Returns False when the key was already there (the first row wins: a key is answered once).
        """
        return self._tx(lambda: self._put(key, identity, pair, label, purpose, paid=paid, source=source,
                                          pending_id=pending_id, started_at=started_at))

    def _put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train", *,
             paid: bool = True, source: str = "judge", pending_id: int | None = None,
             started_at: float | None = None) -> bool:
        row = label_row(key, identity, pair, label, purpose, paid=paid, source=source, started_at=started_at)
        cur = self.db.execute(f"INSERT OR IGNORE INTO labels ({', '.join(LABEL_ROW_COLS)}) VALUES "
                              f"({','.join('?' * len(LABEL_ROW_COLS))})", row)
        if pending_id is not None:
            self.db.execute("DELETE FROM pending WHERE id=?", (pending_id,))
        if cur.rowcount == 1 and paid:
            self._put_parts(key, pair, label, purpose, "label")
        return cur.rowcount == 1

    def _put_parts(self, key: str, pair: Pair, label: Label, purpose: str, of: str) -> None:
        """A composite label's answers, one ``answers`` row each (what each judge was paid); ``of``:
        ``label`` (a committed label's) or ``failed`` (a request that got no label: it may be asked again)."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO answers (key, position, role, judge, identity_hash, pair_id, round, purpose, "
            "swapped, outcome, reason, p_a, raw, tokens_in, tokens_out, cost, latency, attempts, finish_reason, "
            "committed_at, of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(key, i, p.role, p.label.judge or "?", p.identity, pair.id, pair.round, purpose, int(p.label.swapped),
              Outcome(p.label.outcome).value, p.label.reason, p.label.p_a, p.label.raw, int(p.label.tokens_in),
              int(p.label.tokens_out), float(p.label.cost), float(p.label.latency), int(p.label.attempts),
              p.label.finish_reason, now, of) for i, p in enumerate(label.parts)])

    def fail(self, key: str, pair: Pair, label: Label, purpose: str, pending_id: int | None = None) -> None:
        """Record a request that got no answer (e.g. retries exhausted): it is not a label and is never
        served from the ledger (no cached nulls), but what it cost is kept (``failed`` table)."""
        self._tx(lambda: self._fail(key, pair, label, purpose, pending_id=pending_id))

    def _fail(self, key: str, pair: Pair, label: Label, purpose: str, pending_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO failed (key, pair_id, round, purpose, judge, reason, tokens_in, tokens_out, cost, "
            "latency, attempts, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, pair.id, pair.round, purpose, label.judge or "?", label.reason, int(label.tokens_in),
             int(label.tokens_out), float(label.cost), float(label.latency), int(label.attempts), time.time()))
        if pending_id is not None:
            self.db.execute("DELETE FROM pending WHERE id=?", (pending_id,))
        self._put_parts(key, pair, label, purpose, "failed")

    def update_outcome(self, key: str, outcome: Outcome, reason: str | None, p_a: float | None,
                       parser: str) -> None:
        """Re-parse result for one row (audit trail kept in ``reparses``)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                old = self.db.execute("SELECT outcome, reason FROM labels WHERE key=?", (key,)).fetchone()
                if old is None:
                    raise LedgerError(f"no ledger row with key {key}")
                now = time.time()
                self.db.execute("UPDATE labels SET outcome=?, reason=?, p_a=?, parser=?, reparsed_at=? WHERE key=?",
                                (Outcome(outcome).value, reason, p_a, parser, now, key))
                self.db.execute("INSERT INTO reparses (key, old_outcome, new_outcome, old_reason, new_reason, parser, "
                                "at) VALUES (?,?,?,?,?,?,?)",
                                (key, old[0], Outcome(outcome).value, old[1], reason, parser, now))
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # -- reading ------------------------------------------------------------------------------
    def get(self, key: str) -> Label | None:
        with self._lock:
            r = self.db.execute(f"SELECT {', '.join(self._label_cols)} FROM labels WHERE key=?", (key,)).fetchone()
        if r is None:
            return None
        d = dict(zip(self._label_cols, r))
        d["swapped"] = bool(d["swapped"])
        return Label.from_dict(d)

    def get_many(self, keys: Iterable[str]) -> dict[str, Label]:
        """The stored labels of those ``keys`` that have one (a query per 500 keys)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Label] = {}
        for j in range(0, len(keys), 500):
            chunk = keys[j:j + 500]
            with self._lock:
                rows = self.db.execute(f"SELECT key, {', '.join(self._label_cols)} FROM labels WHERE key IN "
                                       f"({','.join('?' * len(chunk))})", chunk).fetchall()
            for key, *r in rows:
                d = dict(zip(self._label_cols, r))
                d["swapped"] = bool(d["swapped"])
                out[key] = Label.from_dict(d)
        return out

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self.db.execute("SELECT 1 FROM labels WHERE key=?", (key,)).fetchone() is not None

    def _select(self, table: str, where: str = "", args: tuple = ()) -> list[dict]:
        with self._lock:
            cur = self.db.execute(f"SELECT * FROM {table} {where} ORDER BY id", args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def rows(self, purpose: str | None = None, round: int | None = None) -> list[dict]:
        """Label rows in commit order (optionally of one purpose / round)."""
        conds, args = [], []
        if purpose is not None:
            conds.append("purpose=?")
            args.append(purpose)
        if round is not None:
            conds.append("round=?")
            args.append(round)
        return self._select("labels", ("WHERE " + " AND ".join(conds)) if conds else "", tuple(args))

    def answers(self, key: str | None = None, purpose: str | None = None) -> list[dict]:
        """The rows of composite judges' answers (``of``: ``label`` or ``failed``), optionally of one
        label ``key`` or ``purpose``; none in a ledger older than schema 4."""
        if "answers" not in self._tables():
            return []
        conds = [(c, v) for c, v in (("key", key), ("purpose", purpose)) if v is not None]
        return self._select("answers", ("WHERE " + " AND ".join(f"{c}=?" for c, _ in conds)) if conds else "",
                            tuple(v for _, v in conds))

    def parts(self, keys: Iterable[str]) -> dict[str, tuple[Part, ...]]:
        """The parts of the committed composite labels of ``keys`` (in each label's pair order)."""
        out: dict[str, list[Part]] = {}
        if "answers" not in self._tables():
            return {}
        keys = list(dict.fromkeys(keys))
        for j in range(0, len(keys), 500):
            chunk = keys[j:j + 500]
            with self._lock:
                cur = self.db.execute(f"SELECT * FROM answers WHERE of='label' AND key IN ({','.join('?' * len(chunk))})"
                                      f" ORDER BY key, position", chunk)
                cols = [c[0] for c in cur.description]
                rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            for r in rows:
                r["swapped"] = bool(r["swapped"])
                out.setdefault(r["key"], []).append(Part(r["role"], r["identity_hash"], Label.from_dict(r)))
        return {k: tuple(v) for k, v in out.items()}

    def _tables(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def pending(self) -> list[dict]:
        return self._select("pending")

    def lost(self) -> list[dict]:
        return self._select("lost")

    def failed(self) -> list[dict]:
        return self._select("failed")

    def reparses(self) -> list[dict]:
        return self._select("reparses")

    def totals(self, purpose: str | None = None, round: int | None = None) -> dict:
        """Counts and spend: ``rows``; ``paid`` rows (bought by this run) and their ``dollars`` /
        ``tokens``; ``cached`` rows (copied from the shared cache); ``lost`` requests (in flight at a
        crash, or raised) with their worst-case ``lost_dollars`` / ``lost_tokens``, which the budget
        also charges; ``failed`` requests (no answer after retries) with what they cost;
        ``spent_dollars`` / ``spent_tokens`` = paid + lost + failed."""
        conds, args = [], []
        if purpose is not None:
            conds.append("purpose=?")
            args.append(purpose)
        if round is not None:
            conds.append("round=?")
            args.append(round)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        paid_where = (where + " AND paid=1") if where else "WHERE paid=1"
        with self._lock:
            n = self.db.execute(f"SELECT COUNT(*) FROM labels {where}", tuple(args)).fetchone()[0]
            p = self.db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(cost),0), COALESCE(SUM(tokens_in),0), COALESCE(SUM(tokens_out),0), "
                f"COALESCE(SUM(latency),0) FROM labels {paid_where}", tuple(args)).fetchone()
            lo = self.db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(worst_dollars),0), COALESCE(SUM(worst_tokens),0) FROM lost {where}",
                tuple(args)).fetchone()
            fa = self.db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(cost),0), COALESCE(SUM(tokens_in+tokens_out),0) FROM failed {where}",
                tuple(args)).fetchone()
            inv = self.db.execute(f"SELECT COUNT(*) FROM labels {where + (' AND ' if where else 'WHERE ')}"
                                  f"outcome='invalid'", tuple(args)).fetchone()[0]
        return {"rows": n, "paid": p[0], "cached": n - p[0], "invalid": inv, "judges": self._by_judge(where, args),
                "dollars": p[1], "tokens": p[2] + p[3], "tokens_in": p[2], "tokens_out": p[3],
                "latency_mean": (p[4] / p[0]) if p[0] else 0.0,
                "lost": lo[0], "lost_dollars": lo[1], "lost_tokens": lo[2],
                "failed": fa[0], "failed_dollars": fa[1], "failed_tokens": fa[2],
                "spent_dollars": p[1] + lo[1] + fa[1], "spent_tokens": p[2] + p[3] + lo[2] + fa[2]}

    def _by_judge(self, where: str, args: Sequence) -> dict:
        """Answers, invalid answers, dollars and tokens per judge that was paid: a composite label's
        members (its ``answers`` rows, failed requests' included), every other judge's paid rows and
        failed requests (lost requests name no answer: they are in ``lost``, not here)."""
        q = ("SELECT judge, COUNT(*), COALESCE(SUM({inv}),0), COALESCE(SUM(cost),0), "
             "COALESCE(SUM(tokens_in+tokens_out),0) FROM {t} {w} GROUP BY judge")
        has_answers = "answers" in self._tables()
        own = (where + " AND " if where else "WHERE ") + "{paid}" + \
            (" AND key NOT IN (SELECT key FROM answers)" if has_answers else "")
        out: dict = {}
        with self._lock:
            rows = self.db.execute(q.format(t="labels", inv="outcome='invalid'", w=own.format(paid="paid=1")),
                                   tuple(args)).fetchall()
            rows += self.db.execute(q.format(t="failed", inv="1", w=own.format(paid="1")), tuple(args)).fetchall()
            if has_answers:
                rows += self.db.execute(q.format(t="answers", inv="outcome='invalid'", w=where), tuple(args)).fetchall()
        for judge, n, inv, dollars, tokens in rows:
            d = out.setdefault(judge, {"answers": 0, "invalid": 0, "dollars": 0.0, "tokens": 0})
            d["answers"] += n
            d["invalid"] += inv
            d["dollars"] += dollars
            d["tokens"] += tokens
        return out

    def close(self) -> None:
        with self._lock:
            try:
                if getattr(self, "db", None) is not None:
                    self.db.close()
                    self.db = None
            finally:
                self._release_lock()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
