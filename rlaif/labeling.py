"""Buying labels: oracle + ledger + budget + concurrency, wired in one place.

For every pair: answer from the ledger if this judge already labelled it (free); otherwise
reserve the worst-case spend, call the judge, commit the row to the ledger, then settle the
budget with what the call really cost. A label is used only after its row is committed.
The ``labels`` limit counts every label the experiment acquires (cached ones too); dollars and
tokens count only what was paid.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from rlaif.budget import Budget
from rlaif.ledger import Ledger, request_key
from rlaif.oracle.base import Oracle, Spend
from rlaif.types import Label, Pair

log = logging.getLogger(__name__)


class Labeler:
    def __init__(self, oracle: Oracle, budget: Budget | None, ledger: Ledger, shared: Ledger | None = None,
                 progress: bool = True) -> None:
        self.oracle = oracle
        self.budget = budget
        self.ledger = ledger
        self.shared = shared
        self.progress = progress
        self.identity = oracle.identity()
        self.identity_hash = oracle.identity_hash()
        self._ready = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def setup(self) -> None:
        if not self._ready:
            await self.oracle.setup()
            self._ready = True

    def key(self, pair: Pair) -> str:
        return request_key(self.identity_hash, pair)

    def _cached(self, pair: Pair, key: str, purpose: str) -> Label | None:
        hit = self.ledger.get(key)
        if hit is None and self.shared is not None:
            hit = self.shared.get(key)
            if hit is not None:  # keep the run's own ledger complete
                self.ledger.put(key, self.identity, pair, hit, purpose)
        if hit is not None:
            hit.cached, hit.cost, hit.tokens_in, hit.tokens_out, hit.latency = True, 0.0, 0, 0, 0.0
        return hit

    async def alabel(self, pairs: Sequence[Pair], purpose: str = "train") -> list[Label | None]:
        """One label per pair, or None where the budget did not allow buying it."""
        await self.setup()
        results: list[Label | None] = [None] * len(pairs)
        todo: list[int] = []
        for i, p in enumerate(pairs):
            hit = self._cached(p, self.key(p), purpose)
            if hit is None:
                todo.append(i)
                continue
            if self.budget is not None and purpose == "train":
                r = self.budget.reserve(Spend(labels=1))
                if r is None:
                    continue
                self.budget.settle(r, Spend(labels=1))
            results[i] = hit

        bs = max(1, self.oracle.cfg.batch_size)
        batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
        sem = asyncio.Semaphore(max(1, self.oracle.cfg.concurrency))
        counted = purpose == "train"

        async def run(batch: list[int]) -> None:
            async with sem:
                worst = Spend()
                for i in batch:
                    worst = worst + self.oracle.worst_case(pairs[i])
                if not counted:
                    worst = Spend(0, worst.dollars, worst.tokens)
                res = self.budget.reserve(worst) if self.budget is not None else None
                if self.budget is not None and res is None:
                    return
                batch_pairs = [pairs[i] for i in batch]
                try:
                    labels = await self.oracle.judge(batch_pairs)
                except Exception as e:  # noqa: BLE001 -- the call may have been paid: charge the worst case
                    log.warning("judge call failed: %s", e)
                    if res is not None:
                        self.budget.settle(res, worst)
                    raise
                actual = Spend(len(batch) if counted else 0, sum(l.cost for l in labels),
                               sum(l.tokens_in + l.tokens_out for l in labels))
                for i, lab in zip(batch, labels):
                    self.ledger.put(self.key(pairs[i]), self.identity, pairs[i], lab, purpose)
                    if self.shared is not None:
                        self.shared.put(self.key(pairs[i]), self.identity, pairs[i], lab, purpose)
                    results[i] = lab
                if res is not None:
                    self.budget.settle(res, actual)

        await asyncio.gather(*(run(b) for b in batches))
        return results

    # one event loop for the labeler's whole life: async HTTP clients stay bound to it
    def _run(self, coro):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def label(self, pairs: Sequence[Pair], purpose: str = "train") -> list[Label | None]:
        return self._run(self.alabel(pairs, purpose))

    def check(self) -> None:
        """Run the judge's preflight (fatal errors stop the run before any spend)."""
        self._run(self.setup())

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self.oracle.aclose())
            self._loop.close()
            self._loop = None
