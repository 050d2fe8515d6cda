"""The shared cross-run label store (``ledger_cache=``): one interface, one file per backend.

* a file path: SQLite (:mod:`rlaif.labels.shared_sqlite`), a ledger opened with ``role="cache"``
  plus an ``inflight`` claim table -- runs on ONE machine (SQLite over NFS is not safe);
* ``postgresql://user@host:port/db``: PostgreSQL (:mod:`rlaif.labels.ledger_pg`), for runs on
  several machines. The password comes from ``PGPASSWORD`` or ``~/.pgpass`` (libpq's own ways): a
  password written into the URL is refused by the start-up checks and never printed or stored.

Either keeps the same label rows as the run ledger (:data:`rlaif.labels.ledger.LABEL_ROW_COLS`)
and only decisive and tie answers (an unparseable answer is never served to another run).

In-flight de-duplication: before buying a request, a run *claims* its key in the store
(:meth:`SharedStore.claim`). A key claimed by another live run is not bought: the run waits
(polling, no budget reserved meanwhile) until the answer lands in the store and takes it from
there free, or until the claim is freed without an answer -- the holder failed, died, or got an
answer that is not shared (invalid) -- and then claims and buys it itself. A dead holder's claim
goes by itself: PostgreSQL frees a session's advisory locks when its connection ends; SQLite's
claim rows name their process (pid, host, start time), and a claim of a process that is gone is
stale. :meth:`SharedStore.acquire` is the one look-up-then-claim step the Labeler uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from rlaif.labels.ledger import LedgerError
from rlaif.types import Label, Outcome, Pair

PG_SCHEMES = ("postgresql", "postgres")
_URL_PASSWORD = re.compile(r"(?i)\b(postgres(?:ql)?://[^:/@\s]*:)([^/?#\s]*)(@)")
_QUERY_PASSWORD = re.compile(r"(?i)(\bpassword=)([^&\s]*)")


def is_pg_url(spec: Any) -> bool:
    """``ledger_cache`` names a PostgreSQL server (``postgresql://...`` / ``postgres://...``)."""
    return isinstance(spec, str) and spec.split("://", 1)[0].lower() in PG_SCHEMES and "://" in spec


def url_password(url: str) -> str | None:
    """The password written into a PostgreSQL URL (``user:PASSWORD@`` or ``?password=``), if any."""
    try:
        parts = urlsplit(url)
        pw = parts.password
    except ValueError:
        pw = None
    if pw:
        return pw
    m = _QUERY_PASSWORD.search(url)
    return m.group(2) if m and m.group(2) else None


def redact_url(text: str) -> str:
    """``text`` with any password of a PostgreSQL URL in it replaced by ``***`` (for logs, ledgers, configs)."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + ("***" if m.group(2) else "") + m.group(3), text)
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + "***", text)


def check_pg_url(url: str) -> None:
    """A PostgreSQL URL that cannot work, refused in one line (no connection is made)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise LedgerError(f"ledger_cache={redact_url(url)}: not a valid PostgreSQL URL ({e}); expected "
                          f"postgresql://USER@HOST:PORT/DATABASE") from None
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise LedgerError(f"ledger_cache={redact_url(url)}: the URL names no database; expected "
                          f"postgresql://USER@HOST:PORT/DATABASE")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise LedgerError(f"ledger_cache={redact_url(url)}: a PostgreSQL label store needs psycopg "
                          "(pip install 'psycopg[binary]')") from None


def shareable(label: Label | None) -> bool:
    """Only decisive and tie answers are served across runs."""
    return label is not None and (label.outcome.decisive or label.outcome is Outcome.TIE)


class SharedStore:
    """What the Labeler needs of a shared store. ``name`` is printable (never a password).

    ``poll_s`` / ``poll_max_s``: how often a run waiting on another run's purchase looks again
    (doubling from the first to the second); ``max_wait_s``: after that long waiting on a holder
    that is alive but never answers, the waiter buys the request itself (warned; it may pay twice).
    """

    name: str = "?"
    path: Path | str = "?"
    poll_s: float = 0.02
    poll_max_s: float = 0.5
    max_wait_s: float = 1800.0

    def get(self, key: str) -> Label | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Label]:
        raise NotImplementedError

    def put(self, key: str, identity: dict, pair: Pair, label: Label, purpose: str = "train", *,
            paid: bool = True, source: str = "judge") -> bool:
        raise NotImplementedError

    def claim(self, keys: Iterable[str]) -> set[str]:
        """Claim the ``keys`` no other live run (nor this store already) holds; the keys claimed."""
        raise NotImplementedError

    def release(self, keys: Iterable[str]) -> None:
        """Free claims of this store (keys it does not hold are ignored)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def acquire(self, keys: list[str]) -> tuple[dict[str, Label], set[str]]:
        """(answers already in the store, keys now claimed here); the other keys are being bought by
        another run. The store is read again after claiming: an answer that landed in between (its
        holder stored it and let go) is taken, not bought again."""
        hits = {k: v for k, v in self.get_many(keys).items() if shareable(v)}
        claimed = self.claim([k for k in keys if k not in hits])
        if claimed:
            late = {k: v for k, v in self.get_many(claimed).items() if shareable(v)}
            if late:
                self.release(late)
                hits.update(late)
                claimed -= set(late)
        return hits, claimed

    def __enter__(self) -> "SharedStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
