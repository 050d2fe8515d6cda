"""Group commit: the ledger writes of many concurrent judge requests, one transaction per group.

The Labeler's purchases each commit a pending row before their call and the answer after it. Done
one by one, every commit is an fsync the event loop waits on; here the writes submitted while one
group commits form the next group, written by :meth:`Ledger.write_many
<rlaif.labels.ledger.Ledger.write_many>` in a worker thread, and each submitter learns when its own
writes are durable -- exactly what the direct calls would have told it, cancellation included.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlaif.labels.ledger import Ledger


class GroupCommit:
    """Ledger writes from many coroutines, committed together: the writes submitted while one group
    commits form the next group, one transaction (one fsync) each, in a worker thread so the event
    loop goes on answering the judge meanwhile. ``await durable(ops)`` returns once ``ops`` are
    durable, exactly as the direct calls would; should a group fail, each submission of it is
    retried alone so that one bad write does not take the others with it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._queue: list[tuple[list, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    def submit_nowait(self, ops: list[tuple[str, tuple, dict]]) -> asyncio.Future:
        """Hand ``ops`` over; the future resolves once they are committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((ops, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return fut

    async def durable(self, ops: list[tuple[str, tuple, dict]]) -> tuple[list[Any], BaseException | None]:
        """Submit and wait until committed even if cancelled meanwhile: (results, the cancellation
        to raise once the caller has recorded them, or None). What the ledger holds and what the
        caller believes it holds never part."""
        fut = self.submit_nowait(ops)
        try:
            return await asyncio.shield(fut), None
        except asyncio.CancelledError as e:
            return await fut, e

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rlaif-ledger")
        while self._queue:
            group, self._queue = self._queue, []
            flat = [op for ops, _ in group for op in ops]
            try:
                results = await loop.run_in_executor(self._pool, self.ledger.write_many, flat)
            except Exception:  # noqa: BLE001 - one at a time, each with its own outcome
                for ops, fut in group:
                    try:
                        res = await loop.run_in_executor(self._pool, self.ledger.write_many, ops)
                    except Exception as e:  # noqa: BLE001
                        if not fut.done():
                            fut.set_exception(e)
                    else:
                        if not fut.done():
                            fut.set_result(res)
                continue
            except BaseException as e:  # cancelled: the waiters learn it (what was committed stays)
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(e)
                raise
            i = 0
            for ops, fut in group:
                if not fut.done():
                    fut.set_result(results[i:i + len(ops)])
                i += len(ops)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
