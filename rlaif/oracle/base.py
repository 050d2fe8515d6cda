"""The oracle: says which of two completions is better.

Every implementation returns the same shape: one :class:`~rlaif.types.Label` per pair, in the
pair's own (a, b) order, with outcome A / B / tie / invalid (never an invalid turned into a
side), P(a) where the judge gives one, the raw output, whether the order shown was swapped,
tokens, cost, latency and attempts.

The position swap is decided here, deterministically from (seed, pair id), so a resumed or
repeated run shows every pair in the same order and its ledger key is stable; an answer about a
swapped showing is put back in the pair's order by :meth:`Label.flipped <rlaif.types.Label.flipped>`.

:func:`merge_both_orders` is the one both-orders rule (a pair asked as shown and swapped): the
openai judge answers with it and ``rlaif reparse`` re-reads its stored answers with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from rlaif.errors import RlaifError
from rlaif.oracle.parsing import NOT_AN_ANSWER, join_finish_reasons
from rlaif.types import Label, Outcome, Pair, Spend

BOTH_ORDERS_SEP = "\n---\n"  # between the two raw answers of a both-orders label


@dataclass
class OracleConfig:
    """Fields every judge has. Implementations subclass this dataclass."""

    name: str = field(default="", metadata={"help": "display name (defaults to the class name)"})
    swap_p: float = field(default=0.5, metadata={"help": "probability of showing the pair swapped"})
    batch_size: int = field(default=1, metadata={"help": "pairs per call of judge_shown"})
    concurrency: int = field(default=1, metadata={"help": "batches in flight at once", "fingerprint": False})
    seed: int = field(default=0, metadata={"help": "seed of the judge's own random choices (swaps)"})


class OracleError(RlaifError, RuntimeError):
    """A fatal judge problem (bad key, unknown model, unreachable endpoint): stop before spending."""


class Oracle(ABC):
    Config: ClassVar[type] = OracleConfig
    kind: ClassVar[str] = "base"
    free: ClassVar[bool] = True  # a local judge costs nothing; paid judges set False
    # True where the oracle itself caps its requests in flight at cfg.concurrency (its HTTP calls,
    # not its bookkeeping): the Labeler may then commit the next requests' pending rows while
    # those calls run, so that no call slot waits on the ledger
    caps_own_concurrency: ClassVar[bool] = False

    def __init__(self, cfg: OracleConfig, *, task: Any = None, **_: Any) -> None:
        self.cfg = cfg
        self.task = task
        self.name = cfg.name or self.kind

    # -- identity: what changes the answers (used as the ledger key) -----------------------
    def identity(self) -> dict:
        """Everything that changes this judge's answers. Never include secrets."""
        return {"kind": self.kind, "swap_p": self.cfg.swap_p, "seed": self.cfg.seed}

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    # -- position swap ---------------------------------------------------------------------
    def swap_for(self, pair: Pair) -> bool:
        """Seeded, reproducible per pair: shown swapped with probability ``swap_p``."""
        if self.cfg.swap_p <= 0:
            return False
        h = hashlib.sha256(f"{self.cfg.seed}:{pair.id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < self.cfg.swap_p

    # -- lifecycle ---------------------------------------------------------------------------
    async def setup(self) -> None:
        """Preflight: raise OracleError on fatal problems, before any budget is spent."""

    async def aclose(self) -> None:
        pass

    def worst_case(self, pair: Pair) -> Spend:
        """Upper bound on what judging ``pair`` may cost (reserved before the call)."""
        return Spend(labels=1)

    # -- judging -----------------------------------------------------------------------------
    @abstractmethod
    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        """Judge pairs exactly as shown (a first). Outcomes are in the shown order."""

    async def judge(self, pairs: Sequence[Pair]) -> list[Label]:
        """Labels in each pair's own order, after the seeded position swap."""
        swaps = [self.swap_for(p) for p in pairs]
        shown = [p.swapped() if s else p for p, s in zip(pairs, swaps)]
        labels = await self.judge_shown(shown)
        if len(labels) != len(pairs):
            raise RuntimeError(f"{self.name} returned {len(labels)} labels for {len(pairs)} pairs")
        out = []
        for lab, s in zip(labels, swaps):
            lab = lab.flipped() if s else lab  # an answer in the shown order, put in the pair's order
            lab.swapped = s
            lab.judge = lab.judge or self.name
            out.append(lab)
        return out

    def label(self, pairs: Sequence[Pair]) -> list[Label]:
        """Synchronous convenience (no ledger, no budget): for scripts and tests."""

        async def go() -> list[Label]:
            await self.setup()
            try:
                out: list[Label] = []
                bs = max(1, self.cfg.batch_size)
                for i in range(0, len(pairs), bs):
                    out += await self.judge(pairs[i:i + bs])
                return out
            finally:
                await self.aclose()

        return asyncio.run(go())


def merge_both_orders(first: Label, second: Label, on_disagreement: str = "tie") -> Label:
    """One label from a pair asked twice: ``first`` as shown, ``second`` as shown the other way round
    (in that showing's own order; flipped back here).

    Either order invalid: invalid, naming the order. The orders disagree: a tie, or invalid where
    ``on_disagreement`` is ``"invalid"``. P(a) is the mean of both where both give one. The raw
    answers are kept joined by :data:`BOTH_ORDERS_SEP`, and the finish reasons one per order (an
    order that got no answer has no text to parse again: :data:`NOT_AN_ANSWER`).
    """
    second = second.flipped()
    merged = Label(outcome=first.outcome, p_a=None, raw=f"{first.raw}{BOTH_ORDERS_SEP}{second.raw}",
                   tokens_in=first.tokens_in + second.tokens_in, tokens_out=first.tokens_out + second.tokens_out,
                   cost=first.cost + second.cost, latency=first.latency + second.latency,
                   attempts=first.attempts + second.attempts,
                   finish_reason=join_finish_reasons(
                       NOT_AN_ANSWER if lab.raw is None else lab.finish_reason for lab in (first, second)))
    if Outcome.INVALID in (first.outcome, second.outcome):
        bad = first if first.outcome is Outcome.INVALID else second
        merged.outcome, merged.reason = Outcome.INVALID, f"{'first' if bad is first else 'second'} order: {bad.reason}"
    elif first.outcome is not second.outcome:
        merged.outcome = Outcome.TIE if on_disagreement == "tie" else Outcome.INVALID
        merged.reason = f"the two orders disagree ({first.outcome.value} then {second.outcome.value})"
    if first.p_a is not None and second.p_a is not None:
        merged.p_a = (first.p_a + second.p_a) / 2
    return merged
