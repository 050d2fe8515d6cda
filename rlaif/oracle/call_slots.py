"""At most ``n`` judge calls in flight: ``n`` slots, each a task that makes one call after another.

Why not a semaphore: releasing one wakes the next waiter only after everything else the event
loop has ready, two loop turns after the answer came in. At 300 calls/s on one core that is about
2 ms a hand-off, 1% of C/L. A slot whose call is answered starts the next waiting call in the same
step, and hands the answer to its caller to read afterwards.

Retries wait in front of new calls (a retried label is not queued behind every later one, so a
batch's last labels come in sooner). A caller that gives up (cancelled) takes its call out of the
queue, or stops it where it is in flight; the slot goes on with the next.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Awaitable, Callable


class _Call:
    __slots__ = ("fn", "fut", "slot", "abandoned")

    def __init__(self, fn: Callable[[], Awaitable[Any]], fut: asyncio.Future) -> None:
        self.fn, self.fut = fn, fut
        self.slot: int | None = None  # the slot making it, while it is in flight
        self.abandoned = False


class CallSlots:
    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._queue: collections.deque[_Call] = collections.deque()
        self._idle: collections.deque[asyncio.Future] = collections.deque()  # slots waiting for a call
        self._tasks: list[asyncio.Task | None] = [None] * self.n
        self._closed = False
        self.in_flight = 0

    async def call(self, fn: Callable[[], Awaitable[Any]], *, retry: bool = False) -> Any:
        """``await fn()`` in a free slot; a retry goes to the front of the queue."""
        if self._closed:
            raise RuntimeError("the judge's call slots are closed")
        loop = asyncio.get_running_loop()
        self._start(loop)
        c = _Call(fn, loop.create_future())
        (self._queue.appendleft if retry else self._queue.append)(c)
        while self._idle:
            w = self._idle.popleft()
            if not w.done():
                w.set_result(None)
                break
        try:
            return await c.fut
        except asyncio.CancelledError:
            c.abandoned = True
            if c.slot is not None:  # in flight: stop it (the slot goes on with the next call)
                task = self._tasks[c.slot]
                if task is not None:
                    task.cancel()
            raise

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        for i, t in enumerate(self._tasks):
            if t is None or t.done():  # first call, or a slot ended (its loop was interrupted)
                self._tasks[i] = loop.create_task(self._slot(i))

    async def _slot(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            if not queue:
                w = loop.create_future()
                self._idle.append(w)
                await w
                continue
            c = queue.popleft()
            if c.fut.done():  # its caller gave up while it waited
                continue
            c.slot = i
            self.in_flight += 1
            try:
                result = await c.fn()
            except asyncio.CancelledError:
                # go on only where that call's caller was the one to cancel, and no one else did
                task = asyncio.current_task()
                if self._closed or not c.abandoned or task is None or task.uncancel() > 0:
                    if not c.fut.done():  # the slot ends here: its caller must not wait for it
                        c.fut.cancel()
                    raise
                continue
            except Exception as e:  # noqa: BLE001 - the caller's to handle
                if not c.fut.done():
                    c.fut.set_exception(e)
            else:
                if not c.fut.done():
                    c.fut.set_result(result)
            finally:
                self.in_flight -= 1
                c.slot = None

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in self._tasks if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = [None] * self.n
        for c in self._queue:
            if not c.fut.done():
                c.fut.cancel()
        self._queue.clear()
        self._idle.clear()
