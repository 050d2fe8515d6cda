"""Buying labels: oracle + ledger + budget + concurrency, wired in one place.

For every pair: answer from the run's ledger (or the shared cache) if this judge already answered
this exact request (free); otherwise reserve the worst-case spend, commit a *pending* row, call the
judge, commit the answer (dropping the pending row in the same transaction), then settle the budget
with what the call really cost. A label is handed out only after its row is committed.

The ``labels`` limit counts every label acquired for training (ledger hits too); dollars and tokens
count only what was paid (plus the worst case of requests lost in flight).
Duplicate requests in one call are asked once. Evaluation labels (``purpose="eval"``) are paid for
in dollars and tokens but do not count against ``labels``; they are charged to ``eval_budget``
(the evaluation's own cap, see :func:`rlaif.labels.budget.run_budgets`) -- by default the same budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from rlaif.labels.budget import WAIT, Budget, check_prices
from rlaif.labels.judge_health import JudgeHealth
from rlaif.labels.ledger import Ledger, LedgerError, identity_digest, reorient, request_key
from rlaif.oracle.base import Oracle, Spend
from rlaif.types import Label, Outcome, Pair

log = logging.getLogger(__name__)


def _spend_of(labels: Sequence[Label], counted: bool) -> Spend:
    return Spend(len(labels) if counted else 0, sum(float(l.cost) for l in labels),
                 sum(int(l.tokens_in) + int(l.tokens_out) for l in labels))


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (vLLM and uvicorn bring it): a third less CPU per judge call."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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


class Labeler:
    """Labels pairs through ``oracle`` under ``budget``, recording every request in ``ledger``.

    ``shared`` is an optional cross-run cache: a :class:`Ledger` opened with ``role="cache"`` or a
    path (opened as one). Only decisive and tie answers are shared across runs (a failed or
    unparseable answer is never served to another run); within a run every committed answer is
    final, so a resumed run gets exactly the answers the interrupted one paid for.
    """

    def __init__(self, oracle: Oracle, budget: Budget | None, ledger: Ledger,
                 shared: Ledger | str | Path | None = None, progress: bool = True,
                 eval_budget: Budget | None | str = "same", health: JudgeHealth | None = None) -> None:
        if ledger.role != "run":
            raise LedgerError(f"{ledger.path} was opened as a shared cache; the Labeler needs the run's own "
                              f"ledger (Ledger(path)) and takes the cache as shared=")
        if shared is not None and not isinstance(shared, Ledger):
            shared = Ledger(shared, role="cache")
        if shared is not None and shared.role != "cache":
            raise LedgerError(f"shared cache {shared.path} must be opened with role='cache'")
        self.oracle = oracle
        self.budget = budget
        self.eval_budget = budget if eval_budget == "same" else eval_budget  # None: evaluation uncapped
        self.ledger = ledger
        self.health = health  # stops the run once the judge's first answers show it is unusable
        self.shared = shared
        self.progress = progress
        self.identity = oracle.identity()
        self.identity_hash = oracle.identity_hash()
        self._identity_digest = identity_digest(self.identity)  # what request keys hash (once, not per key)
        self.prices = check_prices(oracle)  # a paid judge without prices fails here, before any spend
        self._ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._writes = GroupCommit(ledger)
        self.stats = self._zero_stats()
        self.last_stats = self._zero_stats()

    @staticmethod
    def _zero_stats() -> dict:
        return {"requested": 0, "labelled": 0, "cached": 0, "paid": 0, "refused": 0, "lost": 0, "failed": 0,
                "invalid": 0, "dollars": 0.0, "tokens": 0, "latency_sum": 0.0}

    def pipeline_width(self) -> int:
        """Batches of requests between reservation and committed label at once (so, at most, the
        pending rows a kill can leave): ``concurrency``, or twice that for an oracle that caps its
        own calls at ``concurrency`` (the ledger's commits then overlap the calls)."""
        c = max(1, int(getattr(self.oracle.cfg, "concurrency", 1) or 1))
        return 2 * c if self.oracle.caps_own_concurrency else c

    async def setup(self) -> None:
        if not self._ready:
            await self.oracle.setup()
            self._ready = True

    def key(self, pair: Pair) -> str:
        return request_key(self._identity_digest, pair, self.oracle.swap_for(pair))

    # -- cache -------------------------------------------------------------------------------------
    def _cached(self, pair: Pair, key: str, swapped: bool, purpose: str, hit: Label | None) -> Label | None:
        """``hit``: the run ledger's row for ``key`` (looked up in bulk by the caller), if any."""
        if hit is None and self.shared is not None:
            hit = self.shared.get(key)
            if hit is not None and not hit.outcome.decisive and hit.outcome is not Outcome.TIE:
                hit = None
            if hit is not None:  # keep the run's own ledger complete (a free row, not paid by this run)
                self.ledger.put(key, self.identity, pair, reorient(hit, swapped), purpose, paid=False,
                                source=f"cache:{self.shared.path}")
        if hit is None:
            return None
        hit = reorient(hit, swapped)
        hit.cached, hit.cost, hit.tokens_in, hit.tokens_out, hit.latency = True, 0.0, 0, 0, 0.0
        return hit

    # -- budget waiting ---------------------------------------------------------------------------
    async def _reserve(self, budget: Budget | None, worst: Spend, cond: asyncio.Condition, cached: bool = False):
        if budget is None:
            return None
        async with cond:
            while True:
                r = budget.try_reserve(worst, cached)
                if r is not WAIT:
                    return r if r is not None else False
                await cond.wait()

    async def _settle(self, budget: Budget | None, res, actual: Spend, cond: asyncio.Condition) -> None:
        if budget is not None and res:
            budget.settle(res, actual)
            async with cond:
                cond.notify_all()

    # -- labelling ---------------------------------------------------------------------------------
    async def alabel(self, pairs: Sequence[Pair], purpose: str = "train") -> list[Label | None]:
        """One label per pair, in the pair's own order, or None where the budget did not allow it."""
        if purpose not in ("train", "eval", "bench"):
            raise ValueError(f"purpose must be 'train', 'eval' or 'bench', got {purpose!r}")
        await self.setup()
        stats = self._zero_stats()
        stats["requested"] = len(pairs)
        counted = purpose != "eval"  # evaluation judgements cost dollars/tokens but are not labels
        budget = self.budget if counted else self.eval_budget
        cond = asyncio.Condition()
        results: list[Label | None] = [None] * len(pairs)
        n = len(pairs)
        swaps: list[bool] = [False] * n
        todo: dict[str, list[int]] = {}  # key -> the pairs asking it (the first one is asked)
        answers: dict[str, Label] = {}  # key -> its answer, given to every pair of todo[key] at the end
        refused: set[str] = set()  # keys the budget refused
        bs = max(1, int(getattr(self.oracle.cfg, "batch_size", 1) or 1))
        width = self.pipeline_width()
        queue: asyncio.Queue = asyncio.Queue()
        errors: list[BaseException] = []
        workers: list[asyncio.Task] = []
        batch: list[str] = []

        async def run(batch: list[str]) -> None:
            # another labelling call of this Labeler may be asking the same key right now
            mine: list[str] = []
            for k in batch:
                other = self._inflight.get(k)
                if other is not None:
                    lab = await asyncio.shield(other)
                    if lab is not None:
                        answers[k] = lab
                else:
                    mine.append(k)
            if not mine:
                return
            idx = [todo[k][0] for k in mine]
            per = [self.oracle.worst_case(pairs[i]) for i in idx]
            if not counted:
                per = [Spend(0, w.dollars, w.tokens) for w in per]
            worst = Spend()
            for w in per:
                worst = worst + w
            res = await self._reserve(budget, worst, cond)
            if res is False:
                refused.update(mine)
                return
            loop = asyncio.get_running_loop()
            futs = {k: loop.create_future() for k in mine}
            self._inflight.update(futs)
            pend: list[int] = []
            committed: set[int] = set()
            called = False
            cancelled: BaseException | None = None
            try:
                pend, cancelled = await self._writes.durable(
                    [("begin", (k, pairs[i], purpose, self.oracle.name, w), {}) for k, i, w in zip(mine, idx, per)])
                if cancelled is not None:  # nothing was sent: the pending rows go, nothing is charged
                    self.ledger.forget(pend)
                    pend = []
                    raise cancelled
                t0 = time.time()
                called = True
                labels = await self.oracle.judge([pairs[i] for i in idx])
                writes = []
                for k, i, pid, lab in zip(mine, idx, pend, labels):
                    if lab.swapped != swaps[i]:
                        raise RuntimeError(f"{self.oracle.name}: label swapped={lab.swapped} but the seeded "
                                           f"swap for pair {pairs[i].id} is {swaps[i]}")
                    if lab.outcome is Outcome.INVALID and lab.raw is None:
                        # no answer at all (retries exhausted, ...): not a label, never served from the ledger
                        writes.append(("fail", (k, pairs[i], lab, purpose), {"pending_id": pid}))
                        stats["failed"] += 1
                    else:
                        writes.append(("put", (k, self.identity, pairs[i], lab, purpose),
                                       {"paid": True, "source": "judge", "pending_id": pid, "started_at": t0}))
                        stats["paid"] += 1
                # the answers are paid for: committed and settled even if cancelled meanwhile
                _, cancelled = await self._writes.durable(writes)
                committed.update(pend)
                for k, i, lab in zip(mine, idx, labels):
                    if self.shared is not None and (lab.outcome.decisive or lab.outcome is Outcome.TIE):
                        self.shared.put(k, self.identity, pairs[i], lab, purpose, paid=True,
                                        source=f"run:{self.ledger.path}")
                actual = _spend_of(labels, counted)
                await self._settle(budget, res, actual, cond)
                res = None
                stats["dollars"] += actual.dollars
                stats["tokens"] += actual.tokens
                stats["latency_sum"] += sum(float(l.latency) for l in labels)
                stats["invalid"] += sum(1 for l in labels if l.outcome is Outcome.INVALID)
                for k, lab in zip(mine, labels):
                    futs[k].set_result(None if lab.raw is None and lab.outcome is Outcome.INVALID else lab)
                    answers[k] = lab
                if cancelled is not None:
                    raise cancelled
                if self.health is not None:  # after the answers are safe in the ledger
                    self.health.observe(labels)
            except BaseException as e:
                left = [p for p in pend if p not in committed]
                if left:  # the call may have been billed: those requests are lost, charged at worst case
                    log.warning("judge call failed (%d request(s) charged at worst case): %r", len(left), e)
                    self.ledger.abandon(left, f"judge call failed: {type(e).__name__}: {e}")
                    stats["lost"] += len(left)
                raise
            finally:
                if res:  # not settled: charge the worst case if the call was made, else give it back
                    await self._settle(budget, res, Spend(0, worst.dollars, worst.tokens) if called else Spend(), cond)
                for k, f in futs.items():
                    if not f.done():
                        f.set_result(None)
                    self._inflight.pop(k, None)

        # A fixed set of workers takes the batches in order; after an error they take the rest off
        # the queue without doing them (so the look-ups never wait on a full queue), until told to stop.
        async def worker() -> None:
            while (job := await queue.get()) is not None:
                if errors:
                    continue
                try:
                    await run(job)
                except BaseException as e:  # noqa: BLE001 - raised below, once the others stopped
                    errors.append(e)

        def start_workers() -> None:
            if not workers:
                workers.extend(asyncio.ensure_future(worker()) for _ in range(width))

        # 1. ledger hits are free (they still count as labels for training); 2. misses: one request
        #    per distinct key. The requests start while later pairs are still being looked up, unless
        #    the label limit could run out within this call: then every hit first takes its label.
        labels_left = budget.labels_left() if counted and budget is not None else None
        stream = labels_left is None or labels_left >= n
        chunk = 256 if stream else max(1, n)
        if stream:  # the workers start now; the look-ups stay a few batches ahead of them
            queue = asyncio.Queue(maxsize=2 * width)
            start_workers()
        try:
            for start in range(0, n, chunk):
                if errors:
                    break
                idx = range(start, min(n, start + chunk))
                keys = []
                for i in idx:
                    swaps[i] = self.oracle.swap_for(pairs[i])
                    keys.append(request_key(self._identity_digest, pairs[i], swaps[i]))
                own = self.ledger.get_many(keys)
                for i, k in zip(idx, keys):
                    hit = self._cached(pairs[i], k, swaps[i], purpose, own.get(k))
                    if hit is None:
                        if k in todo:  # asked already (same texts shown in the same order)
                            todo[k].append(i)
                            continue
                        todo[k] = [i]
                        batch.append(k)
                        if len(batch) == bs:
                            await queue.put(batch)
                            batch = []
                        continue
                    if counted and budget is not None:
                        r = await self._reserve(budget, Spend(labels=1), cond, cached=True)
                        if not r:
                            stats["refused"] += 1
                            continue
                        await self._settle(budget, r, Spend(labels=1), cond)
                    results[i] = hit
                    stats["cached"] += 1
                if stream:
                    await asyncio.sleep(0)  # let the requests go out
            if batch:
                await queue.put(batch)
            if not queue.empty():
                start_workers()
        except BaseException as e:  # the workers finish what they hold, and take nothing more
            errors.append(e)
            raise
        finally:
            if errors:  # the jobs not taken yet are dropped: room for the stop signals
                while not queue.empty():
                    queue.get_nowait()
            for _ in workers:
                await queue.put(None)
            try:
                await asyncio.gather(*workers)
            finally:
                for k, ids in todo.items():  # same request, possibly from the reversed pair: re-oriented
                    if (lab := answers.get(k)) is not None:
                        for i in ids:
                            results[i] = reorient(lab, swaps[i])
                stats["refused"] += sum(len(todo[k]) for k in refused)
                self._accumulate(stats, results)
        if errors:
            raise errors[0]
        return results

    def _accumulate(self, stats: dict, results: list) -> None:
        stats["labelled"] = sum(1 for r in results if r is not None)
        self.last_stats = stats
        for k, v in stats.items():
            self.stats[k] += v

    # one event loop for the labeler's whole life: async HTTP clients stay bound to it
    def _run(self, coro):
        if self._loop is None:
            self._loop = _new_event_loop()
        loop = self._loop
        try:
            return loop.run_until_complete(coro)
        except BaseException:
            # interrupted (Ctrl-C, SIGTERM -> SystemExit) with calls in flight: cancel them and let
            # them unwind here, so that each request in flight is recorded as lost (charged at its
            # worst case) and nothing is left half-done for the garbage collector
            writer = self._writes._task  # not cancelled: it commits what it was handed
            pending = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not writer]
            for t in pending:
                t.cancel()
            if writer is not None and not writer.done():
                pending.append(writer)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            raise

    def label(self, pairs: Sequence[Pair], purpose: str = "train") -> list[Label | None]:
        return self._run(self.alabel(pairs, purpose))

    def check(self) -> None:
        """Start-up checks: prices (done at construction) and the judge's preflight. Fatal errors
        stop the run here, before any spend."""
        self._run(self.setup())

    def close(self) -> None:
        self._writes.close()  # every write handed to the ledger thread is committed before we go
        if self._loop is not None:
            try:
                self._loop.run_until_complete(self.oracle.aclose())
            finally:
                self._loop.close()
                self._loop = None
        if self.shared is not None:
            self.shared.close()
