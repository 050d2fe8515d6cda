"""The shared label store in PostgreSQL (``ledger_cache=postgresql://user@host:port/db``, psycopg 3).

For runs on several machines. Tables ``rlaif_meta`` and ``rlaif_labels`` (the run ledger's label
columns, :data:`rlaif.labels.ledger.LABEL_ROW_COLS`; the first answer of a key wins) are created
on first use. A run's own ledger stays SQLite in its run directory.

In-flight claims are session advisory locks, one per request key (``pg_try_advisory_lock`` of
the key's first 64 bits): held by this store's connection, freed by ``pg_advisory_unlock`` -- or
by the server when the connection ends, so a run killed with ``kill -9`` (or cut off: TCP
keepalives are on) does not hold anyone up.

The password is libpq's business: ``PGPASSWORD`` or ``~/.pgpass``. What this store prints or
stores (its ``name``, log lines, error messages, the ``source`` of a ledger row) is the URL with
any password in it replaced by ``***``.

A server that fails mid-run does not stop the run (every paid label is committed in the run's own
ledger first): look-ups miss, stores are skipped, claims are taken as granted (so two runs may then
pay for the same request), with a warning; the connection is tried again every ``retry_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from rlaif.labels.ledger import APP, LABEL_ROW_COLS, LedgerError, label_row
from rlaif.labels.shared_store import SharedStore, check_pg_url, redact_url, url_password
from rlaif.types import Label, Pair

log = logging.getLogger(__name__)

# the store's own schema: the label rows of ledger schema 3 (a run ledger's later ``answers`` table,
# a composite judge's members' answers, stays in the run's ledger and is not shared)
SCHEMA_VERSION = 3

_READ_COLS = ("outcome", "reason", "p_a", "raw", "swapped", "tokens_in", "tokens_out", "cost", "latency",
              "attempts", "judge", "finish_reason")
_TYPES = {"round": "INTEGER", "swapped": "INTEGER NOT NULL", "p_a": "DOUBLE PRECISION",
          "tokens_in": "BIGINT NOT NULL", "tokens_out": "BIGINT NOT NULL", "cost": "DOUBLE PRECISION NOT NULL",
          "latency": "DOUBLE PRECISION NOT NULL", "attempts": "INTEGER NOT NULL", "paid": "INTEGER NOT NULL",
          "reparsed_at": "DOUBLE PRECISION", "started_at": "DOUBLE PRECISION", "finished_at": "DOUBLE PRECISION",
          "committed_at": "DOUBLE PRECISION NOT NULL", "key": "TEXT NOT NULL UNIQUE",
          "reason": "TEXT", "raw": "TEXT", "parser": "TEXT", "finish_reason": "TEXT"}
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS rlaif_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rlaif_labels (id BIGSERIAL PRIMARY KEY, "
    + ", ".join(f"{c} {_TYPES.get(c, 'TEXT NOT NULL')}" for c in LABEL_ROW_COLS) + ")",
]
_CREATE_LOCK = 0x726C616966  # "rlaif": the advisory lock that serialises creating the tables


def lock_id(key: str) -> int:
    """The advisory lock of a request key: its first 64 bits, as PostgreSQL's signed bigint."""
    x = int(key[:16], 16) if len(key) >= 16 else hash(key) & (2**64 - 1)
    return x - 2**64 if x >= 2**63 else x


def _one_line(e: BaseException, secret: str | None) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return redact_url(msg.replace(secret, "***") if secret else msg)


class PgStore(SharedStore):
    """A shared label store in PostgreSQL (see the module's docstring)."""

    def __init__(self, url: str, *, connect_timeout: int = 5, retry_s: float = 5.0) -> None:
        check_pg_url(url)
        self._url = url
        self._secret = url_password(url)
        self.name = self.path = redact_url(url)
        self.connect_timeout, self.retry_s = connect_timeout, retry_s
        self._lock = threading.RLock()
        self._held: set[str] = set()
        self._conn: Any = None
        self._down_since: float | None = None
        try:
            self._connect()
            self._create()
        except LedgerError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - psycopg's errors, in one line, without the password
            self.close()
            raise LedgerError(f"ledger_cache={self.name}: cannot use the PostgreSQL label store: "
                              f"{_one_line(e, self._secret)}") from None

    def _connect(self) -> None:
        import psycopg

        self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=self.connect_timeout,
                                     application_name="rlaif", keepalives=1, keepalives_idle=30,
                                     keepalives_interval=10, keepalives_count=3)

    def _create(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            for stmt in _SCHEMA:
                self._conn.execute(stmt)
            meta = dict(self._conn.execute("SELECT k, v FROM rlaif_meta").fetchall())
            if not meta:
                meta = {"app": APP, "schema": str(SCHEMA_VERSION), "role": "cache", "created_at": repr(time.time())}
                self._conn.cursor().executemany("INSERT INTO rlaif_meta VALUES (%s, %s)", list(meta.items()))
                return
        if meta.get("app") != APP or meta.get("role") != "cache":
            raise LedgerError(f"ledger_cache={self.name}: the database's rlaif_meta table is not an rlaif label "
                              f"store's (app={meta.get('app')!r}, role={meta.get('role')!r}); choose another database")
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise LedgerError(f"ledger_cache={self.name}: label store schema {meta.get('schema')} is not the "
                              f"supported {SCHEMA_VERSION}; it was written by another rlaif version")

    # -- every statement goes through here: a server that went away degrades, it does not stop the run
    def _do(self, what: str, fn: Callable[[Any], Any], fallback: Any) -> Any:
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                if self._down_since is not None and time.monotonic() - self._down_since < self.retry_s:
                    return fallback
                try:
                    self._connect()
                except psycopg.Error as e:
                    return self._went_away(what, e, fallback)
                log.warning("ledger_cache=%s: connected again", self.name)
                self._down_since = None
            try:
                return fn(self._conn)
            except psycopg.Error as e:
                if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
                    return self._went_away(what, e, fallback)
                raise LedgerError(f"ledger_cache={self.name}: {what} failed: {_one_line(e, self._secret)}") from None

    def _went_away(self, what: str, e: BaseException, fallback: Any) -> Any:
        if self._down_since is None:
            log.warning("ledger_cache=%s: %s failed (%s); the run goes on without the shared store until it is "
                        "back (requests may be paid by two runs meanwhile)", self.name, what,
                        _one_line(e, self._secret))
        self._down_since = time.monotonic()
        self._held.clear()  # a session's advisory locks end with it
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._conn = None
        return fallback

    def get_many(self, keys: Iterable[str]) -> dict[str, Label]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}

        def go(conn: Any) -> dict[str, Label]:
            rows = conn.execute(f"SELECT key, {', '.join(_READ_COLS)} FROM rlaif_labels WHERE key = ANY(%s)",
                                (keys,)).fetchall()
            out = {}
            for key, *r in rows:
                d = dict(zip(_READ_COLS, r))
                d["swapped"] = bool(d["swapped"])
                out[key] = Label.from_dict(d)
            return out

        return self._do("a look-up", go, {})

    def put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train", *,
            paid: bool = True, source: str = "judge") -> bool:
        row = label_row(key, identity, pair, label, purpose, paid=paid, source=redact_url(source))
        sql = (f"INSERT INTO rlaif_labels ({', '.join(LABEL_ROW_COLS)}) VALUES ({', '.join(['%s'] * len(row))}) "
               f"ON CONFLICT (key) DO NOTHING")
        return self._do("storing a label", lambda conn: conn.execute(sql, row).rowcount == 1, False)

    def claim(self, keys: Iterable[str]) -> set[str]:
        want = [k for k in dict.fromkeys(keys) if k not in self._held]
        if not want:
            return set()

        def go(conn: Any) -> set[str]:
            got = conn.execute("SELECT pg_try_advisory_lock(x) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(x, i) "
                               "ORDER BY i", ([lock_id(k) for k in want],)).fetchall()
            return {k for k, (ok,) in zip(want, got) if ok}

        got = self._do("a claim", go, None)
        if got is None:  # no server: nothing to wait on (the request is bought here)
            return set(want)
        self._held |= got
        return got

    def release(self, keys: Iterable[str]) -> None:
        mine = [k for k in dict.fromkeys(keys) if k in self._held]
        if not mine:
            return
        self._held.difference_update(mine)
        self._do("freeing claims", lambda conn: conn.execute(
            "SELECT pg_advisory_unlock(x) FROM unnest(%s::bigint[]) AS x", ([lock_id(k) for k in mine],)), None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()  # ends the session: its claims go with it
                except Exception:  # noqa: BLE001
                    pass
                self._conn = None
            self._held.clear()
