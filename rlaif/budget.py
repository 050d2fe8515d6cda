"""Label budgets in labels, dollars and tokens (and optionally wall-clock).

Spend is *reserved* before each judge call (worst case) and *settled* after with the real
figures, so no level of concurrency can overrun a limit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rlaif.oracle.base import Spend


class BudgetError(ValueError):
    pass


@dataclass
class Reservation:
    spend: Spend
    settled: bool = False


class Budget:
    def __init__(self, labels: int | None = None, dollars: float | None = None,
                 tokens: int | None = None, wall_seconds: float | None = None) -> None:
        for name, v in (("labels", labels), ("dollars", dollars), ("tokens", tokens),
                        ("wall_seconds", wall_seconds)):
            if v is not None and v <= 0:
                raise BudgetError(f"budget.{name} must be positive, got {v}")
        if labels is None and dollars is None and tokens is None:
            raise BudgetError("set at least one budget limit: budget.labels, budget.dollars or budget.tokens")
        self.limits = Spend(labels or 0, dollars or 0.0, tokens or 0)
        self.has = {"labels": labels is not None, "dollars": dollars is not None, "tokens": tokens is not None}
        self.wall_seconds = wall_seconds
        self.started = time.monotonic()
        self.spent = Spend()
        self.reserved = Spend()
        self.stopped_by: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg) -> "Budget":
        return cls(cfg.labels, cfg.dollars, cfg.tokens, cfg.wall_seconds)

    def _over(self, s: Spend) -> str | None:
        if self.has["labels"] and s.labels > self.limits.labels:
            return "labels"
        if self.has["dollars"] and s.dollars > self.limits.dollars + 1e-12:
            return "dollars"
        if self.has["tokens"] and s.tokens > self.limits.tokens:
            return "tokens"
        return None

    def reserve(self, worst: Spend) -> Reservation | None:
        """Reserve the worst case of one call, or return None (and record why) if it may not fit."""
        with self._lock:
            if self.wall_seconds is not None and time.monotonic() - self.started > self.wall_seconds:
                self.stopped_by = self.stopped_by or "wall_seconds"
                return None
            over = self._over(self.spent + self.reserved + worst)
            if over:
                self.stopped_by = self.stopped_by or over
                return None
            self.reserved = self.reserved + worst
            return Reservation(worst)

    def settle(self, r: Reservation, actual: Spend) -> None:
        with self._lock:
            if r.settled:
                return
            r.settled = True
            self.reserved = Spend(self.reserved.labels - r.spend.labels, self.reserved.dollars - r.spend.dollars,
                                  self.reserved.tokens - r.spend.tokens)
            self.spent = self.spent + actual

    def charge(self, actual: Spend) -> None:
        """Record spend that happened outside a reservation (e.g. restored from a ledger on resume)."""
        with self._lock:
            self.spent = self.spent + actual

    def remaining_labels(self) -> int | None:
        if not self.has["labels"]:
            return None
        return max(0, self.limits.labels - self.spent.labels - self.reserved.labels)

    @property
    def exhausted(self) -> bool:
        return self.stopped_by is not None or self.remaining_labels() == 0

    def as_dict(self) -> dict:
        return {"labels": self.spent.labels, "dollars": round(self.spent.dollars, 8), "tokens": self.spent.tokens,
                "limits": {k: getattr(self.limits, k) for k, on in self.has.items() if on},
                "stopped_by": self.stopped_by}
