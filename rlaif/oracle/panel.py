"""``panel``: several judges answer every pair; one verdict by majority vote or mean P(A).

Members are any configured judges: ``oracle.members`` lists option names of ``conf/oracle/``
(``[reward_model, simulated]``, read with :func:`rlaif.config.load_option`), paths of option
YAMLs, or nested oracle nodes with their own ``_target_`` -- mixed freely. Every member is asked
every pair (concurrently, each with its own seeded position swap and its own batch size).

Aggregation over the *valid* members (an invalid member is left out of the vote):

* ``majority``: A when more valid members say A than say B and than say tie; B likewise;
  otherwise (an even A/B split, or ties the most common answer) a tie. P(A) is the mean of the
  valid members' P(A) (None where none gives one).
* ``mean_p``: P(A) = mean over valid members of their P(A) (a member without one counts 1 for A,
  0 for B, 0.5 for a tie); A above ``0.5 + tie_margin``, B below ``0.5 - tie_margin``, else a tie.

Every member invalid: the panel's answer is invalid (naming each member's reason); if no member
answered at all (every raw answer None) the panel's raw is None too, so the Labeler records a
failed request, not a label.

Costs -- one request, one label, its exact cost: the panel's label is the one label row the
Labeler commits for the request, and its ``cost`` / ``tokens_in`` / ``tokens_out`` / ``attempts``
are the *sums* of the members' (latency: the slowest member, as they run at once). Every member's
answer is a :class:`~rlaif.types.Part` of that label, and the ledger keeps each as its own row of
its ``answers`` table, with its own cost, tokens, latency, raw output and finish reason, keyed by
the label's key (:meth:`Ledger.answers <rlaif.labels.ledger.Ledger.answers>`; the per-judge
spend is ``Ledger.totals()["judges"]``). The label's ``raw`` is the panel's own record:
``{"panel": aggregation, "verdict", "agreement", "valid", "members": [names]}``, where
``agreement`` is the share of valid members whose answer is the verdict (:func:`agreement_of`).
A member that raised is an invalid part charged its worst case (it may have been billed); if
every member raised, the first error is raised (a fatal judge problem stops the run as it would
alone).

Budget: :meth:`worst_case` is the sum of the members' worst cases, so the Labeler's reservation
and pending row cover every member call; :meth:`identity` hashes every member's identity and the
aggregation, so changing any member is a different judge in the ledger.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from rlaif.oracle.base import Oracle, OracleConfig
from rlaif.registry import ConfigError
from rlaif.types import Label, Outcome, Pair, Part, Spend

AGGREGATIONS = ("majority", "mean_p")


@dataclass
class PanelConfig(OracleConfig):
    members: list[Any] = field(default_factory=list, metadata={
        "help": "the judges: option names of conf/oracle/ (reward_model, simulated, ...), option YAML paths, "
                "or oracle nodes with their own _target_"})
    aggregation: str = field(default="majority", metadata={"help": "majority | mean_p"})
    tie_margin: float = field(default=0.0, metadata={"help": "mean_p: |P(A) - 0.5| <= this is a tie"})
    swap_p: float = field(default=0.0, metadata={
        "help": "probability of showing the pair swapped to the whole panel (each member also swaps on its own)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per call of the panel (each member batches its own)"})
    concurrency: int = field(default=2, metadata={"help": "batches in flight at once", "fingerprint": False})

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"oracle.aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")


# -- members: building, asking, recording ------------------------------------------------------------
def member_node(spec: Any) -> Any:
    """A member's config node: an option name of conf/oracle/, an option YAML path, or a node."""
    if not isinstance(spec, (str, Path)):
        return spec
    from rlaif import paths
    from rlaif.config import load_option

    path = Path(spec)
    if not path.suffix:
        path = paths.CONF_DIR / "oracle" / f"{spec}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (paths.CONF_DIR / "oracle").glob("*.yaml"))
        raise ConfigError(f"oracle member {spec!r}: no such option (a YAML path, or one of {', '.join(known)})")
    return load_option(path)


def build_member(spec: Any, where: str, **deps: Any) -> Oracle:
    from rlaif.registry import build

    return build(member_node(spec), where, **deps)


def part(member: Oracle, lab: Label, role: str = "member") -> Part:
    """One judge's answer as a part of the composite label (named by the judge, whatever it said)."""
    return Part(role, member.identity_hash(), replace(lab, judge=lab.judge or member.name))


async def ask(member: Oracle, pairs: Sequence[Pair]) -> tuple[list[Label], Exception | None]:
    """``member``'s labels for ``pairs`` (pair order), in its own batches, all in flight at once, and the
    error it raised, if any: then its answers are invalid, charged at its worst case (it may have been billed)."""
    bs = max(1, int(getattr(member.cfg, "batch_size", 1) or 1))
    try:
        chunks = await asyncio.gather(*(member.judge(pairs[i:i + bs]) for i in range(0, len(pairs), bs)))
    except Exception as e:  # noqa: BLE001 -- kept as the member's invalid answer (re-raised if all fail)
        out = []
        for p in pairs:
            w = member.worst_case(p)
            out.append(Label.invalid(f"{member.name} raised {type(e).__name__}: {e} (charged at its worst case)",
                                     cost=w.dollars, tokens_in=w.tokens, judge=member.name))
        return out, e
    return [lab for chunk in chunks for lab in chunk], None


def combine(labels: Sequence[Label], *, latency: float, **kw: Any) -> Label:
    """A label whose cost, tokens and attempts are the sums of ``labels``'."""
    return Label(tokens_in=sum(l.tokens_in for l in labels), tokens_out=sum(l.tokens_out for l in labels),
                 cost=sum(float(l.cost) for l in labels), attempts=sum(l.attempts for l in labels),
                 latency=latency, **kw)


def worst_sum(members: Sequence[Oracle], pair: Pair) -> Spend:
    total = Spend(labels=1)
    for m in members:
        w = m.worst_case(pair)
        total = total + Spend(0, w.dollars, w.tokens)
    return total


def check_member_prices(members: Sequence[Oracle]) -> tuple[float, float]:
    """Every paid member must have prices (raises :class:`BudgetError` naming it); the aggregate judge
    reports what its members' answers cost, per call."""
    from rlaif.labels.budget import check_prices

    for m in members:
        check_prices(m)
    return 0.0, 0.0


# -- aggregation ---------------------------------------------------------------------------------
def _p_of(lab: Label) -> float:
    if lab.p_a is not None:
        return float(lab.p_a)
    return {Outcome.A: 1.0, Outcome.B: 0.0}.get(lab.outcome, 0.5)


def aggregate(valid: Sequence[Label], aggregation: str, tie_margin: float) -> tuple[Outcome, Optional[float]]:
    """The verdict and P(A) of the valid members' answers (see the module's doc)."""
    if aggregation == "mean_p":
        p = sum(_p_of(l) for l in valid) / len(valid)
        return (Outcome.A if p > 0.5 + tie_margin else Outcome.B if p < 0.5 - tie_margin else Outcome.TIE), p
    votes = {o: sum(l.outcome is o for l in valid) for o in (Outcome.A, Outcome.B, Outcome.TIE)}
    given = [float(l.p_a) for l in valid if l.p_a is not None]
    p = sum(given) / len(given) if given else None
    for side, other in ((Outcome.A, Outcome.B), (Outcome.B, Outcome.A)):
        if votes[side] > votes[other] and votes[side] > votes[Outcome.TIE]:
            return side, p
    return Outcome.TIE, p


class PanelOracle(Oracle):
    """A panel of judges (see the module's doc)."""

    Config = PanelConfig
    kind = "panel"

    def __init__(self, cfg: PanelConfig, *, task: Any = None, **kw: Any) -> None:
        super().__init__(cfg, task=task, **kw)
        if not cfg.members:
            raise ConfigError("oracle.members: a panel needs at least one judge, e.g. oracle.members=[reward_model,simulated]")
        self.members = [build_member(m, f"oracle.members[{i}]", task=task, **kw) for i, m in enumerate(cfg.members)]
        self.free = all(m.free for m in self.members)

    def identity(self) -> dict:
        return {**super().identity(), "aggregation": self.cfg.aggregation, "tie_margin": self.cfg.tie_margin,
                "members": [m.identity() for m in self.members]}

    def prices(self) -> tuple[float, float]:
        return check_member_prices(self.members)

    async def setup(self) -> None:
        # one after the other: members that load models in threads (local_llm, fitted_rm) must not
        # run transformers' from_pretrained at once (its meta-device init is not thread-safe)
        for m in self.members:
            await m.setup()

    async def aclose(self) -> None:
        await asyncio.gather(*(m.aclose() for m in self.members))

    def worst_case(self, pair: Pair) -> Spend:
        return worst_sum(self.members, pair)

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        got = await asyncio.gather(*(ask(m, shown) for m in self.members))
        answers, errors = [a for a, _ in got], [e for _, e in got]
        if all(e is not None for e in errors):
            raise errors[0]
        return [self.verdict([a[i] for a in answers]) for i in range(len(shown))]

    def verdict(self, labs: Sequence[Label]) -> Label:
        """The panel's label for one pair from its members' answers ``labs`` (in member order)."""
        c = self.cfg
        valid = [l for l in labs if l.outcome is not Outcome.INVALID]
        parts = tuple(part(m, l) for m, l in zip(self.members, labs))
        names = [m.name for m in self.members]
        lat = max((float(l.latency) for l in labs), default=0.0)
        if not valid:
            reason = "every member invalid: " + "; ".join(f"{m.name}: {l.reason}" for m, l in zip(self.members, labs))
            raw = None if all(l.raw is None for l in labs) else json.dumps(
                {"panel": c.aggregation, "verdict": "invalid", "agreement": None, "valid": 0, "members": names})
            return combine(labs, latency=lat, outcome=Outcome.INVALID, reason=reason, raw=raw, judge=self.name,
                           parts=parts)
        outcome, p = aggregate(valid, c.aggregation, c.tie_margin)
        agreement = sum(l.outcome is outcome for l in valid) / len(valid)
        raw = json.dumps({"panel": c.aggregation, "verdict": outcome.value, "agreement": agreement,
                          "valid": len(valid), "members": names})
        return combine(labs, latency=lat, outcome=outcome, p_a=p, raw=raw, judge=self.name, parts=parts)


def agreement_of(raw: str | None) -> float | None:
    """The panel's agreement kept in its raw answer (None for another judge's)."""
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return None
    return doc.get("agreement") if isinstance(doc, dict) else None
