"""Label budgets in labels, dollars and tokens (any combination; wall-clock optional).

Spend is *reserved* before each judge call (its worst case) and *settled* after with the real
figures, so no level of concurrency can overrun a limit: the sum of what was spent and what is
reserved never exceeds a limit. A request that does not fit while others are still in flight
waits for them to settle (they usually cost less than their worst case); one that does not fit
with nothing in flight stops the budget, and :attr:`Budget.stopped_by` names the limit.

What counts:

* ``labels`` counts every label the experiment acquires for training (ledger hits too, so a
  resumed run buys exactly what an uninterrupted one would); evaluation labels do not count;
* ``dollars`` and ``tokens`` count what was paid to the judge, including requests that were in
  flight when a process died or failed without an answer (charged at their worst case: the judge
  may have billed them). :meth:`Budget.restore` reloads them from the ledger on resume.

A paid judge (``oracle.free is False``) must have prices configured; :func:`check_prices`
raises at start-up otherwise. A local judge is explicitly free.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from rlaif.errors import RlaifError
from rlaif.types import Spend


class BudgetError(RlaifError, ValueError):
    """A budget misconfiguration (no limit, a non-positive limit, a paid judge without prices)."""


@dataclass
class Reservation:
    spend: Spend
    settled: bool = False


class _Wait:
    """Returned by :meth:`Budget.try_reserve` when a request may fit once in-flight ones settle."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT = _Wait()
_EPS = 1e-12
LIMITS = ("labels", "dollars", "tokens")


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    try:
        return getattr(cfg, name, default)
    except Exception:  # noqa: BLE001 -- omegaconf raises on missing keys of structured configs
        return default


class Budget:
    def __init__(self, labels: int | None = None, dollars: float | None = None,
                 tokens: int | None = None, wall_seconds: float | None = None) -> None:
        for name, v in (("labels", labels), ("dollars", dollars), ("tokens", tokens),
                        ("wall_seconds", wall_seconds)):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0
                                  or (isinstance(v, float) and not math.isfinite(v))):
                raise BudgetError(f"budget.{name} must be a positive number, got {v!r}")
        if labels is None and dollars is None and tokens is None:
            raise BudgetError("set at least one budget limit: budget.labels, budget.dollars or budget.tokens "
                              "(conf/budget/: default, dollars, tokens)")
        self.limits = Spend(int(labels or 0), float(dollars or 0.0), int(tokens or 0))
        self.has = {"labels": labels is not None, "dollars": dollars is not None, "tokens": tokens is not None}
        self.wall_seconds = wall_seconds
        self.started = time.monotonic()
        self.spent = Spend()
        self.reserved = Spend()
        self.outstanding = 0  # reservations not yet settled
        self.peak = Spend()  # max of spent + reserved ever seen (for tests and the summary)
        self.stopped_by: str | None = None
        self.restored: dict | None = None
        self.cheapest: Spend | None = None  # smallest worst case of a paid request seen (for `exhausted`)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any) -> "Budget":
        """From ``cfg.budget`` (a BudgetConfig, DictConfig or dict; unknown keys are ignored)."""
        return cls(_get(cfg, "labels"), _get(cfg, "dollars"), _get(cfg, "tokens"), _get(cfg, "wall_seconds"))

    # -- internals ------------------------------------------------------------------------------
    def _over(self, s: Spend, dims: tuple[str, ...] = LIMITS) -> str | None:
        if "labels" in dims and self.has["labels"] and s.labels > self.limits.labels:
            return "labels"
        if "dollars" in dims and self.has["dollars"] and s.dollars > self.limits.dollars + _EPS:
            return "dollars"
        if "tokens" in dims and self.has["tokens"] and s.tokens > self.limits.tokens:
            return "tokens"
        return None

    def _wall_over(self) -> bool:
        return self.wall_seconds is not None and time.monotonic() - self.started > self.wall_seconds

    def labels_left(self) -> int | None:
        """Labels the ``labels`` limit still allows: not yet spent or reserved (None: no label limit)."""
        with self._lock:
            if not self.has["labels"]:
                return None
            return max(0, self.limits.labels - self.spent.labels - self.reserved.labels)

    # -- reserving ------------------------------------------------------------------------------
    def try_reserve(self, worst: Spend, cached: bool = False) -> Reservation | _Wait | None:
        """Reserve ``worst`` if it fits; :data:`WAIT` if it may fit after in-flight calls settle;
        None if it cannot (the budget is then stopped and :attr:`stopped_by` says why).

        ``cached=True`` is a label answered from the ledger: it only counts against ``labels``
        and is still given after a dollar, token or wall-clock stop.
        """
        with self._lock:
            if cached:
                if self.stopped_by == "labels":
                    return None
                over = self._over(self.spent + self.reserved + worst, ("labels",))
                if over:
                    if self.outstanding:
                        return WAIT
                    self.stopped_by = self.stopped_by or over
                    return None
            else:
                if self.stopped_by is not None:
                    return None
                if self._wall_over():
                    self.stopped_by = "wall_seconds"
                    return None
                over = self._over(self.spent + self.reserved + worst)
                if over:
                    if self.outstanding:
                        return WAIT
                    self.stopped_by = over
                    return None
            if not cached and (worst.dollars > 0 or worst.tokens > 0):
                c = self.cheapest or worst
                self.cheapest = Spend(min(c.labels, worst.labels), min(c.dollars, worst.dollars),
                                      min(c.tokens, worst.tokens))
            self.reserved = self.reserved + worst
            self.outstanding += 1
            tot = self.spent + self.reserved
            self.peak = Spend(max(self.peak.labels, tot.labels), max(self.peak.dollars, tot.dollars),
                              max(self.peak.tokens, tot.tokens))
            return Reservation(worst)

    def reserve(self, worst: Spend, cached: bool = False) -> Reservation | None:
        """Synchronous reserve: a reservation, or None when it does not fit right now."""
        r = self.try_reserve(worst, cached)
        return None if r is WAIT else r  # type: ignore[return-value]

    def settle(self, r: Reservation, actual: Spend) -> None:
        """Replace a reservation by what the call really cost (never more than reserved is assumed:
        an actual above the worst case is recorded as is, and the next reservations see it)."""
        with self._lock:
            if r.settled:
                return
            r.settled = True
            self.outstanding -= 1
            self.reserved = Spend(self.reserved.labels - r.spend.labels, self.reserved.dollars - r.spend.dollars,
                                  self.reserved.tokens - r.spend.tokens)
            self.spent = self.spent + actual
            tot = self.spent + self.reserved
            self.peak = Spend(max(self.peak.labels, tot.labels), max(self.peak.dollars, tot.dollars),
                              max(self.peak.tokens, tot.tokens))

    def release(self, r: Reservation) -> None:
        """Give a reservation back unused (the call was never made)."""
        self.settle(r, Spend())

    def charge(self, actual: Spend) -> None:
        """Record spend that happened outside a reservation (e.g. restored from a ledger)."""
        with self._lock:
            self.spent = self.spent + actual

    def restore(self, ledger: Any, labels: bool = False, purpose: str | None = None) -> dict:
        """On resume: charge what the run's ledger says was already paid.

        Dollars and tokens of every paid row, plus the worst case of every request that was in
        flight when a previous process died (the ledger's ``lost`` table). Labels are *not*
        restored by default, because the loop re-labels earlier rounds through the Labeler and
        those ledger hits count again (``labels=True`` restores the count of train rows instead,
        for a caller that does not re-label). ``purpose`` restores only that purpose's rows (a run
        whose evaluation has a budget of its own). Returns what was charged.
        """
        t = ledger.totals(purpose=purpose)
        n = ledger.totals(purpose="train")["rows"] if labels else 0
        got = {"labels": n, "dollars": t["spent_dollars"], "tokens": t["spent_tokens"],
               "paid_rows": t["paid"], "lost_requests": t["lost"]}
        self.charge(Spend(n, t["spent_dollars"], t["spent_tokens"]))
        self.restored = got
        return got

    def count_elapsed(self, seconds: float) -> None:
        """On resume: the wall-clock seconds earlier processes of the run already used count
        against ``wall_seconds`` (the clock does not restart with each process)."""
        with self._lock:
            self.started -= max(0.0, float(seconds))

    # -- reporting ------------------------------------------------------------------------------
    def remaining(self) -> dict:
        """What is left of each configured limit (after what is reserved)."""
        with self._lock:
            return self._remaining_unlocked()

    def _remaining_unlocked(self) -> dict:
        tot = self.spent + self.reserved
        out: dict[str, float | int] = {}
        if self.has["labels"]:
            out["labels"] = max(0, self.limits.labels - tot.labels)
        if self.has["dollars"]:
            out["dollars"] = round(max(0.0, self.limits.dollars - tot.dollars), 10)
        if self.has["tokens"]:
            out["tokens"] = max(0, self.limits.tokens - tot.tokens)
        return out

    @property
    def exhausted(self) -> bool:
        """True when the next label cannot be bought: a limit stopped a reservation, no labels are
        left, or not even the cheapest paid request seen so far would fit in what is left of the
        dollars or tokens (so the loop does not acquire a round it cannot pay for)."""
        if self.stopped_by is None and self.labels_left() == 0:
            self.stopped_by = "labels"
        if self.stopped_by is None and self.cheapest is not None and self.outstanding == 0:
            over = self._over(self.spent + self.cheapest, ("dollars", "tokens"))
            if over:
                self.stopped_by = over
        if self.stopped_by is None and self._wall_over():
            self.stopped_by = "wall_seconds"
        return self.stopped_by is not None

    def as_dict(self) -> dict:
        with self._lock:
            lim = {k: getattr(self.limits, k) for k, on in self.has.items() if on}
            if self.wall_seconds is not None:
                lim["wall_seconds"] = self.wall_seconds
            return {"labels": self.spent.labels, "dollars": round(self.spent.dollars, 8),
                    "tokens": self.spent.tokens, "limits": lim, "stopped_by": self.stopped_by,
                    "remaining": self._remaining_unlocked(),
                    "elapsed_s": round(time.monotonic() - self.started, 3),
                    "peak": {"labels": self.peak.labels, "dollars": round(self.peak.dollars, 8),
                             "tokens": self.peak.tokens},
                    "restored": self.restored}


def run_budgets(budget_cfg: Any, eval_cfg: Any, eval_judged: bool) -> tuple["Budget", "Budget | None"]:
    """The training budget and the evaluation's, from ``cfg.budget`` and ``cfg.eval``.

    When the oracle judges the evaluation, the evaluation gets a cap of its own in dollars and tokens:
    ``eval.max_dollars`` / ``eval.max_tokens``, or else ``eval.budget_share`` of ``budget.dollars`` /
    ``budget.tokens``. That cap is held back from the training labels, so neither can starve the
    other and together they never exceed the run's limits. Returns ``(train, eval)``; ``eval`` is
    None when nothing caps it (no dollar or token limit anywhere: its spend is still recorded).
    """
    d, t = _get(budget_cfg, "dollars"), _get(budget_cfg, "tokens")
    ed, et = _get(eval_cfg, "max_dollars"), _get(eval_cfg, "max_tokens")
    share = float(_get(eval_cfg, "budget_share", 0.0) or 0.0)
    if not 0.0 <= share < 1.0:
        raise BudgetError(f"eval.budget_share must be in [0, 1), got {share}")
    if not eval_judged:
        ed = et = None
    else:
        ed = ed if ed is not None else (share * d if d is not None and share > 0 else None)
        et = et if et is not None else (int(share * t) if t is not None and share > 0 else None)
    for name, cap, limit in (("max_dollars", ed, d), ("max_tokens", et, t)):
        if cap is not None and (cap <= 0 or (limit is not None and cap >= limit)):
            raise BudgetError(f"eval.{name}={cap} must be positive and below the run's budget "
                              f"({limit}): the evaluation's cap is taken out of it")
    train = Budget(_get(budget_cfg, "labels"), None if d is None else d - (ed or 0.0),
                   None if t is None else t - (et or 0), _get(budget_cfg, "wall_seconds"))
    return train, (Budget(dollars=ed, tokens=et) if ed is not None or et is not None else None)


# -- prices -------------------------------------------------------------------------------------
_PRICE_PAIRS = (("price_input_per_mtok", "price_output_per_mtok"), ("price_in", "price_out"), ("input_price", "output_price"), ("price_input", "price_output"),
                ("usd_per_m_in", "usd_per_m_out"), ("price_per_m_in", "price_per_m_out"))


def oracle_prices(oracle: Any) -> tuple[float, float] | None:
    """$ per million (input, output) tokens of a judge, or None when none is configured.

    Looks, in order, for ``oracle.prices()`` (or an attribute ``prices``) giving a pair or a dict
    with ``input``/``output``; then on ``oracle.cfg`` for one of the field pairs ``price_in``/
    ``price_out``, ``input_price``/``output_price``, ...; then ``cfg.prices``, either
    ``{input, output}`` or a per-model table ``{model: {input, output}}`` looked up by ``cfg.model``.
    """

    def pair(v: Any) -> tuple[float, float] | None:
        if v is None:
            return None
        if isinstance(v, (tuple, list)) and len(v) == 2 and all(x is not None for x in v):
            return float(v[0]), float(v[1])
        if hasattr(v, "items"):
            d = dict(v.items())
            for a, b in (("input", "output"), ("in", "out"), ("prompt", "completion")):
                if d.get(a) is not None and d.get(b) is not None:
                    return float(d[a]), float(d[b])
        return None

    p = getattr(oracle, "prices", None)
    if callable(p):
        p = p()
    got = pair(p)
    if got:
        return got
    cfg = getattr(oracle, "cfg", None)
    for a, b in _PRICE_PAIRS:
        va, vb = _get(cfg, a), _get(cfg, b)
        if va is not None and vb is not None:
            return float(va), float(vb)
    per_label = _get(cfg, "price_per_label")
    if per_label is not None and float(per_label) > 0:
        return 0.0, 0.0  # priced per label (simulated judges): the judge reports its cost per call
    table = _get(cfg, "prices")
    got = pair(table)
    if got:
        return got
    model = _get(cfg, "model")
    if table is not None and hasattr(table, "items") and model is not None:
        return pair(dict(table.items()).get(model))
    return None


def check_prices(oracle: Any) -> tuple[float, float] | None:
    """Start-up check: a paid judge must have prices; a local judge is free (returns None).

    Raises :class:`BudgetError` naming the judge and the fields to set.
    """
    if getattr(oracle, "free", True):
        return None
    prices = oracle_prices(oracle)
    name = getattr(oracle, "name", type(oracle).__name__)
    model = _get(getattr(oracle, "cfg", None), "model")
    if prices is None:
        raise BudgetError(
            f"judge {name!r}{f' (model {model!r})' if model else ''} is paid but has no price configured, so its "
            f"spend cannot be accounted or capped. Set its prices in $ per million tokens, e.g. "
            f"oracle.price_input_per_mtok=0.15 oracle.price_output_per_mtok=0.60 (or oracle.free=true for a "
            f"local endpoint you do not pay for).")
    if any(not math.isfinite(x) or x < 0 for x in prices):
        raise BudgetError(f"judge {name!r}: prices must be finite and >= 0 $ per million tokens, got {prices}")
    return prices
