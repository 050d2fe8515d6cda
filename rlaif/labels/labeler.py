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

One call of :meth:`Labeler.alabel` runs in named stages, sharing its state (:class:`_Call`):

* look-up (``_look_up``): ledger and shared-cache hits, each taking its training label from the
  budget; the misses become one :class:`Request` per distinct key, batched for
* the worker pool (:class:`_Workers`): a fixed set of workers taking the batches in order, and
* purchase (``_buy`` / ``_purchase``): reserve -> pending row -> judge -> commit -> settle. With
  a shared store (``ledger_cache=``), a key is first claimed in it (``_buy_shared``): a request
  another run is buying right now is not bought again -- it is waited for (no budget reserved
  meanwhile) and taken from the store free, or bought here if that run let go without a shared
  answer (it died, failed, or got an invalid answer, which is never shared).

What holds whatever is interrupted: a paid label is never lost or paid twice (it is committed
before it is handed out, and a request that was sent without a committed answer is recorded as
lost); the budget is never overrun (the worst case is reserved before the call); a cancellation
commits what was paid, and gives back the reservation of what was never sent. The ledger writes
of concurrent purchases are group-committed (:mod:`rlaif.labels.group_commit`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from rlaif.labels.budget import WAIT, Budget, check_prices
from rlaif.labels.group_commit import GroupCommit
from rlaif.labels.judge_health import JudgeHealth
from rlaif.labels.ledger import Ledger, LedgerError, identity_digest, request_key
from rlaif.labels.shared_store import SharedStore, is_pg_url, shareable
from rlaif.logger.progress import budget_text, counting, progress as progress_bar
from rlaif.oracle.base import Oracle
from rlaif.types import Label, Outcome, Pair, Spend

log = logging.getLogger(__name__)


def open_shared(shared: SharedStore | Ledger | str | Path | None) -> SharedStore | None:
    """The shared store ``shared`` names: a store as it is, a cache :class:`Ledger` or a file path
    (SQLite, :mod:`rlaif.labels.shared_sqlite`), a ``postgresql://`` URL (:mod:`rlaif.labels.ledger_pg`)."""
    if shared is None or isinstance(shared, SharedStore):
        return shared
    if is_pg_url(shared):
        from rlaif.labels.ledger_pg import PgStore

        return PgStore(str(shared))
    from rlaif.labels.shared_sqlite import SqliteStore

    return SqliteStore(shared)


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


@dataclass(frozen=True)
class Request:
    """One distinct judge request to buy: its ledger ``key``, the pair asking it (``index`` in the
    call's pairs; later pairs with the same key share its answer), whether that pair is shown
    ``swapped``, and the ``worst`` case reserved for it."""

    key: str
    index: int
    swapped: bool
    worst: Spend


def _zero_stats() -> dict:
    return {"requested": 0, "labelled": 0, "cached": 0, "paid": 0, "refused": 0, "lost": 0, "failed": 0,
            "invalid": 0, "dollars": 0.0, "tokens": 0, "latency_sum": 0.0}


def _no_progress(n: int) -> None:
    pass


@dataclass
class _Call:
    """What the stages of one ``alabel`` call share."""

    pairs: Sequence[Pair]
    purpose: str
    budget: Budget | None  # the training budget, or the evaluation's
    counted: bool  # training labels count against ``labels``; evaluation judgements do not
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)  # budget waiters
    stats: dict = field(default_factory=_zero_stats)
    results: list[Label | None] = field(init=False)
    swaps: list[bool] = field(init=False)
    todo: dict[str, list[int]] = field(default_factory=dict)  # key -> the pairs asking it (the first is asked)
    answers: dict[str, Label] = field(default_factory=dict)  # key -> its answer, for every pair of todo[key]
    refused: set[str] = field(default_factory=set)  # keys the budget refused
    advance: Callable[[int], None] = field(default_factory=lambda: _no_progress)  # n more pairs answered

    def __post_init__(self) -> None:
        self.stats["requested"] = len(self.pairs)
        self.results = [None] * len(self.pairs)
        self.swaps = [False] * len(self.pairs)


class _Workers:
    """A fixed set of ``width`` workers taking batches of keys in order (``job(batch)`` each). After
    an error they take the rest off the queue without doing them (so the look-ups never wait on a
    full queue), until told to stop. ``bounded``: the queue holds at most two batches per worker."""

    def __init__(self, width: int, batch_size: int, job: Callable[[list[str]], Awaitable[None]],
                 bounded: bool) -> None:
        self.width, self.batch_size, self.job = width, batch_size, job
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=2 * width) if bounded else asyncio.Queue()
        self.errors: list[BaseException] = []
        self.tasks: list[asyncio.Task] = []
        self.batch: list[str] = []

    def start(self) -> None:
        if not self.tasks:
            self.tasks.extend(asyncio.ensure_future(self._work()) for _ in range(self.width))

    async def _work(self) -> None:
        while (job := await self.queue.get()) is not None:
            if self.errors:
                continue
            try:
                await self.job(job)
            except BaseException as e:  # noqa: BLE001 - raised by alabel, once the others stopped
                self.errors.append(e)

    async def add(self, key: str) -> None:
        """One more key; a full batch goes on the queue."""
        self.batch.append(key)
        if len(self.batch) == self.batch_size:
            await self.queue.put(self.batch)
            self.batch = []

    async def flush(self) -> None:
        """The last, partial batch goes on the queue; the workers start if they have not yet."""
        if self.batch:
            await self.queue.put(self.batch)
        if not self.queue.empty():
            self.start()

    async def finish(self) -> None:
        """Stop the workers once they are done; after an error, the jobs not taken yet are dropped
        (room for the stop signals)."""
        if self.errors:
            while not self.queue.empty():
                self.queue.get_nowait()
        for _ in self.tasks:
            await self.queue.put(None)
        await asyncio.gather(*self.tasks)


class Labeler:
    """Labels pairs through ``oracle`` under ``budget``, recording every request in ``ledger``.

    ``shared`` is an optional cross-run store (:func:`open_shared`): a :class:`Ledger` opened with
    ``role="cache"``, a path (opened as one) or a ``postgresql://`` URL. Only decisive and tie
    answers are shared across runs (a failed or unparseable answer is never served to another
    run); within a run every committed answer is final, so a resumed run gets exactly the answers
    the interrupted one paid for. A request another run is buying right now is waited for and
    taken from the store free (see :meth:`_buy_shared`).
    """

    def __init__(self, oracle: Oracle, budget: Budget | None, ledger: Ledger,
                 shared: SharedStore | Ledger | str | Path | None = None, progress: bool = True,
                 eval_budget: Budget | None | str = "same", health: JudgeHealth | None = None) -> None:
        if ledger.role != "run":
            raise LedgerError(f"{ledger.path} was opened as a shared cache; the Labeler needs the run's own "
                              f"ledger (Ledger(path)) and takes the cache as shared=")
        shared = open_shared(shared)
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
        self.stats = _zero_stats()
        self.last_stats = _zero_stats()

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
    def _cached(self, pair: Pair, key: str, swapped: bool, purpose: str, hit: Label | None,
                shared: Label | None = None) -> Label | None:
        """``hit``: the run ledger's row for ``key``, ``shared``: the shared store's (looked up in bulk
        by the caller), if any."""
        if hit is None and shareable(shared):
            hit = shared  # keep the run's own ledger complete (a free row, not paid by this run)
            self.ledger.put(key, self.identity, pair, hit.oriented(swapped), purpose, paid=False,
                            source=f"cache:{self.shared.name}")
        if hit is None:
            return None
        hit = hit.oriented(swapped)
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

    # -- labelling: the stages of one call -------------------------------------------------------
    async def alabel(self, pairs: Sequence[Pair], purpose: str = "train") -> list[Label | None]:
        """One label per pair, in the pair's own order, or None where the budget did not allow it."""
        if purpose not in ("train", "eval", "bench"):
            raise ValueError(f"purpose must be 'train', 'eval' or 'bench', got {purpose!r}")
        await self.setup()
        counted = purpose != "eval"  # evaluation judgements cost dollars/tokens but are not labels
        call = _Call(pairs, purpose, self.budget if counted else self.eval_budget, counted)
        n = len(pairs)
        bar = progress_bar(n, f"{self.oracle.name}: labelling ({purpose})", "pair", enabled=self.progress)
        call.advance = counting(bar, lambda: budget_text(call.budget, call.stats["invalid"], len(call.refused)))
        # 1. ledger hits are free (they still count as labels for training); 2. misses: one request
        #    per distinct key. The requests start while later pairs are still being looked up, unless
        #    the label limit could run out within this call: then every hit first takes its label.
        labels_left = call.budget.labels_left() if counted and call.budget is not None else None
        stream = labels_left is None or labels_left >= n
        chunk = 256 if stream else max(1, n)
        pool = _Workers(self.pipeline_width(), max(1, int(getattr(self.oracle.cfg, "batch_size", 1) or 1)),
                        lambda batch: self._buy(call, batch), bounded=stream)
        if stream:  # the workers start now; the look-ups stay a few batches ahead of them
            pool.start()
        try:
            for start in range(0, n, chunk):
                if pool.errors:
                    break
                await self._look_up(call, range(start, min(n, start + chunk)), pool)
                if stream:
                    await asyncio.sleep(0)  # let the requests go out
            await pool.flush()
        except BaseException as e:  # the workers finish what they hold, and take nothing more
            pool.errors.append(e)
            raise
        finally:
            try:
                await pool.finish()
            finally:
                self._hand_out(call)
                bar.close()
        if pool.errors:
            raise pool.errors[0]
        return call.results

    async def _look_up(self, call: "_Call", idx: range, pool: "_Workers") -> None:
        """Look-up: the pairs ``idx`` answered from the ledger (or the shared cache) take their label;
        the others go to the workers, one request per distinct key."""
        keys = []
        for i in idx:
            call.swaps[i] = self.oracle.swap_for(call.pairs[i])
            keys.append(request_key(self._identity_digest, call.pairs[i], call.swaps[i]))
        own = self.ledger.get_many(keys)
        shared = self.shared.get_many([k for k in keys if k not in own]) if self.shared is not None else {}
        for i, k in zip(idx, keys):
            hit = self._cached(call.pairs[i], k, call.swaps[i], call.purpose, own.get(k), shared.get(k))
            if hit is None:
                if k in call.todo:  # asked already (same texts shown in the same order)
                    call.todo[k].append(i)
                else:
                    call.todo[k] = [i]
                    await pool.add(k)
            elif await self._take_label(call):
                call.results[i] = hit
                call.stats["cached"] += 1
                call.advance(1)

    async def _take_label(self, call: "_Call") -> bool:
        """A ledger hit for training still takes a label from the ``labels`` limit; False when refused."""
        if not call.counted or call.budget is None:
            return True
        r = await self._reserve(call.budget, Spend(labels=1), call.cond, cached=True)
        if not r:
            call.stats["refused"] += 1
            return False
        await self._settle(call.budget, r, Spend(labels=1), call.cond)
        return True

    def _hand_out(self, call: "_Call") -> None:
        """Every pair asking a bought request gets its answer; the call's stats are added up."""
        for k, ids in call.todo.items():  # same request, possibly from the reversed pair: re-oriented
            if (lab := call.answers.get(k)) is not None:
                for i in ids:
                    call.results[i] = lab.oriented(call.swaps[i])
        call.stats["refused"] += sum(len(call.todo[k]) for k in call.refused)
        self._accumulate(call.stats, call.results)

    # -- purchase: reserve -> pending row -> judge -> commit -> settle ------------------------------
    async def _buy(self, call: "_Call", batch: list[str]) -> None:
        """Buy the answers to one batch of keys (a worker's job)."""
        mine = await self._not_asked_elsewhere(call, batch)
        if self.shared is not None:
            await self._buy_shared(call, mine)
        elif mine:
            await self._buy_keys(call, mine)

    async def _buy_shared(self, call: "_Call", keys: list[str]) -> None:
        """In-flight de-duplication across runs: the keys claimed here are bought; those another run
        is buying are waited for, with no budget reserved meanwhile, and taken from the shared store
        free once answered -- or claimed and bought here once the other run let go without a shared
        answer (it failed, died, or its answer was invalid)."""
        store, delay, t0 = self.shared, self.shared.poll_s, time.monotonic()
        while keys:
            hits, claimed = store.acquire(keys)
            try:
                await self._from_store(call, hits)
                if claimed:
                    await self._buy_keys(call, [k for k in keys if k in claimed])
            finally:
                store.release(claimed)  # after the answers went to the store (_purchase shares them)
            keys = [k for k in keys if k not in hits and k not in claimed]
            if keys and time.monotonic() - t0 > store.max_wait_s:
                log.warning("%d request(s) claimed by another run for over %.0f s: buying them here (they may be "
                            "paid twice)", len(keys), store.max_wait_s)
                await self._buy_keys(call, keys)
                return
            if keys:
                await asyncio.sleep(delay)
                delay = min(2 * delay, store.poll_max_s)

    async def _from_store(self, call: "_Call", hits: dict[str, Label]) -> None:
        """Answers another run bought meanwhile: free rows in the run's ledger, one label each."""
        for k, shared in hits.items():
            i = call.todo[k][0]
            lab = self._cached(call.pairs[i], k, call.swaps[i], call.purpose, None, shared)
            if await self._take_label(call):
                call.answers[k] = lab
                call.stats["cached"] += len(call.todo[k])
                call.advance(len(call.todo[k]))

    async def _buy_keys(self, call: "_Call", mine: list[str]) -> None:
        """Reserve the worst case of ``mine`` and buy them (or they are refused)."""
        reqs = [self._request(call, k) for k in mine]
        worst = Spend()
        for r in reqs:
            worst = worst + r.worst
        res = await self._reserve(call.budget, worst, call.cond)
        if res is False:
            call.refused.update(mine)
            return
        await self._purchase(call, reqs, worst, res)

    async def _not_asked_elsewhere(self, call: "_Call", batch: list[str]) -> list[str]:
        """The keys of ``batch`` to buy here: another labelling call of this Labeler may be asking
        some right now (their answers are awaited and taken from it)."""
        mine: list[str] = []
        for k in batch:
            other = self._inflight.get(k)
            if other is not None:
                lab = await asyncio.shield(other)
                if lab is not None:
                    call.answers[k] = lab
                    call.advance(len(call.todo[k]))
            else:
                mine.append(k)
        return mine

    def _request(self, call: "_Call", key: str) -> "Request":
        i = call.todo[key][0]  # the first pair asking it is the one asked
        worst = self.oracle.worst_case(call.pairs[i])
        if not call.counted:
            worst = Spend(0, worst.dollars, worst.tokens)
        return Request(key, i, call.swaps[i], worst)

    async def _purchase(self, call: "_Call", reqs: list["Request"], worst: Spend, res: Any) -> None:
        """Judge ``reqs`` under the reservation ``res``. A paid answer is committed before it is handed
        out; a request that was sent but got no committed answer is lost (charged at its worst case)."""
        loop = asyncio.get_running_loop()
        futs = {r.key: loop.create_future() for r in reqs}
        self._inflight.update(futs)
        pend: list[int] = []
        committed: set[int] = set()
        called = False
        try:
            pend = await self._begin(call, reqs)
            t0 = time.time()
            called = True
            labels = await self.oracle.judge([call.pairs[r.index] for r in reqs])
            # the answers are paid for: committed and settled even if cancelled meanwhile
            _, cancelled = await self._writes.durable(self._answer_writes(call, reqs, pend, labels, t0))
            committed.update(pend)
            self._share(call, reqs, labels)
            actual = _spend_of(labels, call.counted)
            await self._settle(call.budget, res, actual, call.cond)
            res = None
            self._record(call, reqs, labels, actual, futs)
            if cancelled is not None:
                raise cancelled
            if self.health is not None:  # after the answers are safe in the ledger
                self.health.observe(labels)
        except BaseException as e:
            left = [p for p in pend if p not in committed]
            if left:  # the call may have been billed: those requests are lost, charged at worst case
                log.warning("judge call failed (%d request(s) charged at worst case): %r", len(left), e)
                self.ledger.abandon(left, f"judge call failed: {type(e).__name__}: {e}")
                call.stats["lost"] += len(left)
            raise
        finally:
            if res:  # not settled: charge the worst case if the call was made, else give it back
                await self._settle(call.budget, res, Spend(0, worst.dollars, worst.tokens) if called else Spend(),
                                   call.cond)
            for k, f in futs.items():
                if not f.done():
                    f.set_result(None)
                self._inflight.pop(k, None)

    async def _begin(self, call: "_Call", reqs: list["Request"]) -> list[int]:
        """Commit a pending row (its worst case) per request before anything is sent; their ids."""
        pend, cancelled = await self._writes.durable(
            [("begin", (r.key, call.pairs[r.index], call.purpose, self.oracle.name, r.worst), {}) for r in reqs])
        if cancelled is not None:  # nothing was sent: the pending rows go, nothing is charged
            self.ledger.forget(pend)
            raise cancelled
        return pend

    def _answer_writes(self, call: "_Call", reqs: list["Request"], pend: list[int], labels: list[Label],
                       t0: float) -> list[tuple[str, tuple, dict]]:
        """The ledger writes of the judge's answers, each dropping its pending row."""
        writes = []
        for r, pid, lab in zip(reqs, pend, labels):
            pair = call.pairs[r.index]
            if lab.swapped != r.swapped:
                raise RuntimeError(f"{self.oracle.name}: label swapped={lab.swapped} but the seeded "
                                   f"swap for pair {pair.id} is {r.swapped}")
            if lab.outcome is Outcome.INVALID and lab.raw is None:
                # no answer at all (retries exhausted, ...): not a label, never served from the ledger
                writes.append(("fail", (r.key, pair, lab, call.purpose), {"pending_id": pid}))
                call.stats["failed"] += 1
            else:
                writes.append(("put", (r.key, self.identity, pair, lab, call.purpose),
                               {"paid": True, "source": "judge", "pending_id": pid, "started_at": t0}))
                call.stats["paid"] += 1
        return writes

    def _share(self, call: "_Call", reqs: list["Request"], labels: list[Label]) -> None:
        """Decisive and tie answers go to the shared cross-run cache, if any."""
        if self.shared is None:
            return
        for r, lab in zip(reqs, labels):
            if shareable(lab):
                self.shared.put(r.key, self.identity, call.pairs[r.index], lab, call.purpose, paid=True,
                                source=f"run:{self.ledger.path}")

    @staticmethod
    def _record(call: "_Call", reqs: list["Request"], labels: list[Label], actual: Spend, futs: dict) -> None:
        """The committed answers: counted, and handed to whoever waits on them."""
        call.stats["dollars"] += actual.dollars
        call.stats["tokens"] += actual.tokens
        call.stats["latency_sum"] += sum(float(l.latency) for l in labels)
        call.stats["invalid"] += sum(1 for l in labels if l.outcome is Outcome.INVALID)
        for r, lab in zip(reqs, labels):
            futs[r.key].set_result(None if lab.raw is None and lab.outcome is Outcome.INVALID else lab)
            call.answers[r.key] = lab
        call.advance(sum(len(call.todo[r.key]) for r in reqs))

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
