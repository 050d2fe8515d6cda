"""The shared label store in a SQLite file (``ledger_cache=PATH``), for runs on one machine.

The labels are a :class:`~rlaif.labels.ledger.Ledger` opened with ``role="cache"``; the same file
gets an ``inflight`` table of claims -- ``(key, pid, host, started, token)``, one row per request
being bought -- written in the same ``BEGIN IMMEDIATE`` transactions as any other write to it. A
claim is *stale* (taken over by the next run that asks) when its process is gone: on this host,
when the pid no longer runs, is a zombie, or now belongs to a process started after the claim
(pid reuse); a claim written on another host cannot be checked and goes stale ``stale_s`` seconds
after it was taken (SQLite is not meant to be shared between machines: use PostgreSQL there).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterable

from rlaif.labels.ledger import Ledger, LedgerError
from rlaif.labels.shared_store import SharedStore
from rlaif.types import Label, Pair

_INFLIGHT = ("CREATE TABLE IF NOT EXISTS inflight (key TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, "
             "started REAL NOT NULL, token TEXT NOT NULL)")


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start(pid: int) -> tuple[float | None, bool]:
    """(when process ``pid`` started, as epoch seconds or None where unknown; whether it is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, False
    boot = _boot_time()
    start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    return start, fields[0] == "Z"


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether ``pid`` runs (and, with ``since``, is the process that was running then, not a reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start, zombie = process_start(pid)
    if zombie:
        return False
    return since is None or start is None or start <= since + 1.0


class SqliteStore(SharedStore):
    """A shared SQLite cache ledger with in-flight claims (see the module's docstring)."""

    def __init__(self, cache: Ledger | str | Path, *, stale_s: float = 3600.0) -> None:
        self.ledger = cache if isinstance(cache, Ledger) else Ledger(cache, role="cache")
        if self.ledger.role != "cache":
            raise LedgerError(f"shared cache {self.ledger.path} must be opened with role='cache'")
        self.path = self.ledger.path
        self.name = str(self.path)
        self.stale_s = stale_s
        self._token = uuid.uuid4().hex
        self._host = socket.gethostname()
        self._held: set[str] = set()
        if not self.ledger.readonly:
            self.ledger._tx(lambda: self.ledger.db.execute(_INFLIGHT))

    def get_many(self, keys: Iterable[str]) -> dict[str, Label]:
        return self.ledger.get_many(keys)

    def put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train", *,
            paid: bool = True, source: str = "judge") -> bool:
        return self.ledger.put(key, identity, pair, label, purpose, paid=paid, source=source)

    def _stale(self, pid: int, host: str, started: float, now: float) -> bool:
        if host == self._host:
            return not pid_alive(pid, started)
        return now - started > self.stale_s

    def claim(self, keys: Iterable[str]) -> set[str]:
        want = [k for k in dict.fromkeys(keys) if k not in self._held]
        if not want or self.ledger.readonly:
            return set()
        db = self.ledger.db

        def go() -> set[str]:
            now, rows = time.time(), {}
            for j in range(0, len(want), 500):
                chunk = want[j:j + 500]
                for k, pid, host, started, token in db.execute(
                        f"SELECT key, pid, host, started, token FROM inflight WHERE key IN "
                        f"({','.join('?' * len(chunk))})", chunk):
                    rows[k] = (pid, host, started, token)
            got = [k for k in want if k not in rows or (rows[k][3] != self._token and self._stale(*rows[k][:3], now))]
            db.executemany("INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?)",
                           [(k, os.getpid(), self._host, now, self._token) for k in got])
            return set(got)

        got = self.ledger._tx(go)
        self._held |= got
        return got

    def release(self, keys: Iterable[str]) -> None:
        mine = [k for k in keys if k in self._held]
        if not mine or self.ledger.db is None:
            return
        db = self.ledger.db
        self.ledger._tx(lambda: db.executemany("DELETE FROM inflight WHERE key=? AND token=?",
                                               [(k, self._token) for k in mine]))
        self._held.difference_update(mine)

    def holders(self) -> list[dict]:
        """The claims in the file now (for tests and ``rlaif`` tools)."""
        return [dict(zip(("key", "pid", "host", "started"), r)) for r in
                self.ledger.db.execute("SELECT key, pid, host, started FROM inflight ORDER BY started")]

    def close(self) -> None:
        try:
            if self.ledger.db is not None:
                self.release(list(self._held))
        finally:
            self.ledger.close()
