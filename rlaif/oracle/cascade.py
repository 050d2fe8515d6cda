"""``cascade``: a cheap judge first; the expensive judge only where the cheap one is not sure.

``oracle.cheap`` and ``oracle.expensive`` are judges as a panel's members are given (an option
name of ``conf/oracle/``, an option YAML path, or a node with its own ``_target_``). Every pair is
asked of the cheap judge (in both orders where ``both_orders``: the cascade shows it the pair and
the pair swapped); the pair goes on to the expensive judge when the cheap answer is

* ``invalid``;
* ``inconsistent``: asked both orders, the two valid answers disagree;
* ``tie`` (where ``escalate_on_tie``);
* ``uncertain``: its P(A) is within ``margin`` of 0.5 (|P(A) - 0.5| < margin; an answer without a
  P(A) is never uncertain).

The verdict is the expensive judge's where it was asked and answered validly, else the cheap
judge's: its answer where valid and consistent, a tie where its two orders disagree, invalid
where it was invalid too.

Costs -- one request, one label, its exact cost: the label's ``cost`` / tokens / attempts are
the sums of what was actually called (the cheap judge's one or two answers, the expensive one's if
asked), latency the sum (they run one after the other). Every answer is a
:class:`~rlaif.types.Part` of the label (roles ``cheap``, ``cheap_reversed``, ``expensive``), kept
by the ledger as its own row with its own cost (:meth:`Ledger.answers
<rlaif.labels.ledger.Ledger.answers>`); the label's ``raw`` is the cascade's own record:
``{"cascade": {"escalated", "why", "verdict_from"}}``. :meth:`worst_case` reserves both judges
(the cheap one twice where ``both_orders``); :meth:`identity` covers both judges and the thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from rlaif.oracle.base import Oracle, OracleConfig
from rlaif.oracle.panel import ask, build_member, check_member_prices, combine, part
from rlaif.registry import ConfigError
from rlaif.types import Label, Outcome, Pair, Spend


@dataclass
class CascadeConfig(OracleConfig):
    cheap: Any = field(default=None, metadata={
        "help": "the judge asked first: an option name of conf/oracle/, an option YAML path, or an oracle node"})
    expensive: Any = field(default=None, metadata={
        "help": "the judge asked only where the cheap one is uncertain, inconsistent or invalid (same forms)"})
    margin: float = field(default=0.2, metadata={"help": "escalate when |P(A) - 0.5| < margin (cheap answer)"})
    both_orders: bool = field(default=False, metadata={
        "help": "ask the cheap judge both orders; escalate when they disagree"})
    escalate_on_tie: bool = field(default=True, metadata={"help": "escalate a cheap tie"})
    swap_p: float = field(default=0.0, metadata={
        "help": "probability of showing the pair swapped to the cascade (each judge also swaps on its own)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per call of the cascade"})
    concurrency: int = field(default=2, metadata={"help": "batches in flight at once", "fingerprint": False})

    def __post_init__(self) -> None:
        if self.cheap is None or self.expensive is None:
            raise ConfigError("oracle=cascade needs oracle.cheap and oracle.expensive (judges: option names or nodes)")
        if not 0.0 <= self.margin <= 0.5:
            raise ConfigError(f"oracle.margin must be within [0, 0.5], got {self.margin}")


class CascadeOracle(Oracle):
    """A cheap judge, then an expensive one where needed (see the module's doc)."""

    Config = CascadeConfig
    kind = "cascade"

    def __init__(self, cfg: CascadeConfig, *, task: Any = None, **kw: Any) -> None:
        super().__init__(cfg, task=task, **kw)
        self.cheap = build_member(cfg.cheap, "oracle.cheap", task=task, **kw)
        self.expensive = build_member(cfg.expensive, "oracle.expensive", task=task, **kw)
        self.free = self.cheap.free and self.expensive.free

    def identity(self) -> dict:
        c = self.cfg
        return {**super().identity(), "margin": c.margin, "both_orders": c.both_orders,
                "escalate_on_tie": c.escalate_on_tie, "cheap": self.cheap.identity(),
                "expensive": self.expensive.identity()}

    def prices(self) -> tuple[float, float]:
        return check_member_prices([self.cheap, self.expensive])

    async def setup(self) -> None:
        await self.cheap.setup()
        await self.expensive.setup()

    async def aclose(self) -> None:
        try:
            await self.cheap.aclose()
        finally:
            await self.expensive.aclose()

    def worst_case(self, pair: Pair) -> Spend:
        w, e = self.cheap.worst_case(pair), self.expensive.worst_case(pair)
        k = 2 if self.cfg.both_orders else 1
        return Spend(1, k * w.dollars + e.dollars, k * w.tokens + e.tokens)

    def why(self, first: Label, second: Optional[Label]) -> Optional[str]:
        """Why the cheap answer(s) go on to the expensive judge, or None."""
        c = self.cfg
        labs = [first] if second is None else [first, second]
        if any(l.outcome is Outcome.INVALID for l in labs):
            return "invalid"
        if second is not None and first.outcome is not second.outcome:
            return "inconsistent"
        if c.escalate_on_tie and any(l.outcome is Outcome.TIE for l in labs):
            return "tie"
        ps = [float(l.p_a) for l in labs if l.p_a is not None]
        if ps and abs(sum(ps) / len(ps) - 0.5) < c.margin:
            return "uncertain"
        return None

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        first, err = await ask(self.cheap, shown)
        if err is not None:
            raise err  # nothing answered: a fatal judge problem stops here, as the cheap judge alone would
        second: list[Optional[Label]] = [None] * len(shown)
        if self.cfg.both_orders:  # the other order, put back in each pair's own order
            other, err = await ask(self.cheap, [p.swapped() for p in shown])
            second = [replace(l.flipped(), swapped=not l.swapped) for l in other]  # it saw the other order
        whys = [self.why(f, s) for f, s in zip(first, second)]
        up = [i for i, w in enumerate(whys) if w]
        expensive, _ = await ask(self.expensive, [shown[i] for i in up]) if up else ([], None)
        exp = dict(zip(up, expensive))
        return [self.verdict(first[i], second[i], whys[i], exp.get(i)) for i in range(len(shown))]

    def verdict(self, first: Label, second: Optional[Label], why: Optional[str], exp: Optional[Label]) -> Label:
        """The cascade's label for one pair from the cheap answer(s) and the expensive one (if asked)."""
        cheap = [first] if second is None else [first, second]
        parts = tuple(part(self.cheap, l, role) for l, role in zip(cheap, ("cheap", "cheap_reversed"))) + \
            ((part(self.expensive, exp, "expensive"),) if exp is not None else ())
        called = cheap + ([exp] if exp is not None else [])
        if exp is not None and exp.outcome is not Outcome.INVALID:
            src, outcome, p, reason = "expensive", exp.outcome, exp.p_a, None
        elif why in (None, "tie", "uncertain"):  # the cheap answer stands (consistent and valid)
            ps = [float(l.p_a) for l in cheap if l.p_a is not None]
            src, outcome, p, reason = "cheap", first.outcome, (sum(ps) / len(ps) if ps else None), None
        elif why == "inconsistent":  # both cheap answers valid, and they disagree: a tie
            src, outcome, p, reason = "cheap", Outcome.TIE, None, "the cheap judge's two orders disagree"
        else:
            src, outcome, p = None, Outcome.INVALID, None
            reason = f"cheap judge {why}" + (f"; expensive judge invalid: {exp.reason}" if exp is not None else "")
        raw = None if all(l.raw is None for l in called) else json.dumps(
            {"cascade": {"escalated": exp is not None, "why": why, "verdict_from": src}})
        return combine(called, latency=sum(float(l.latency) for l in called), outcome=outcome, p_a=p,
                       reason=reason, raw=raw, judge=self.name, parts=parts)
