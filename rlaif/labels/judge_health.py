"""The judge health guard: a judge that cannot do the job stops the run before it spends the budget.

After the first ``min_answers`` answers a judge is unhealthy when

* more than ``max_invalid_rate`` of its answers are invalid (unparseable, cut off, HTML, refusals),
  so most of what is bought trains nothing; or
* the share of its decisive answers that pick the completion *shown first* lies outside
  ``first_position_band``: a judge that always says "B" (or "A") answers the position, not the pair
  (with random swaps an honest judge sits near 0.5; 20 fair answers fall outside [0.1, 0.9] with
  probability ~4e-4).

The same verdict marks judges in ``bench-oracle``'s leaderboard. On by default for paid judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from rlaif.oracle.base import OracleError
from rlaif.types import Label, Outcome


@dataclass
class JudgeHealthConfig:
    enabled: Optional[bool] = field(default=None, metadata={
        "help": "stop a run whose judge is unhealthy (null: on for paid judges, off for free ones)"})
    min_answers: int = field(default=20, metadata={"help": "answers seen before the judge is assessed"})
    max_invalid_rate: float = field(default=0.5, metadata={"help": "highest tolerated share of invalid answers"})
    first_position_min: float = field(default=0.1, metadata={
        "help": "lowest tolerated share of decisive answers that pick the completion shown first"})
    first_position_max: float = field(default=0.9, metadata={
        "help": "highest tolerated share of decisive answers that pick the completion shown first"})


class JudgeHealthError(OracleError):
    """The judge's first answers show it cannot label this task; nothing more is bought."""


def shown_first(label: Label) -> bool:
    """Did a decisive answer pick the completion the judge saw first (outcomes are in pair order)?"""
    return (label.outcome is Outcome.A) != bool(label.swapped)


def verdict(answers: int, invalid: int, decisive: int, first: int, cfg: JudgeHealthConfig) -> str | None:
    """Why a judge with these counts is unhealthy, or None (also None before ``min_answers``)."""
    if answers < max(1, cfg.min_answers):
        return None
    if invalid / answers > cfg.max_invalid_rate:
        return (f"{invalid} of its first {answers} answers were invalid ({100 * invalid / answers:.0f}% > "
                f"{100 * cfg.max_invalid_rate:.0f}%)")
    if decisive >= max(1, cfg.min_answers):
        share = first / decisive
        if not cfg.first_position_min <= share <= cfg.first_position_max:
            return (f"{first} of its {decisive} decisive answers picked the completion shown first "
                    f"({100 * share:.0f}%, outside [{100 * cfg.first_position_min:.0f}%, "
                    f"{100 * cfg.first_position_max:.0f}%]): it answers the position, not the pair")
    return None


class JudgeHealth:
    """Counts a judge's paid answers and raises :class:`JudgeHealthError` once they look unhealthy."""

    def __init__(self, cfg: JudgeHealthConfig, judge: str) -> None:
        self.cfg, self.judge = cfg, judge
        self.answers = self.invalid = self.decisive = self.first = 0

    def observe(self, labels: Iterable[Label]) -> None:
        for lab in labels:
            self.answers += 1
            self.invalid += lab.outcome is Outcome.INVALID
            if lab.outcome.decisive:
                self.decisive += 1
                self.first += shown_first(lab)
        why = verdict(self.answers, self.invalid, self.decisive, self.first, self.cfg)
        if why:
            raise JudgeHealthError(
                f"judge {self.judge!r} stopped by the health guard: {why}. Check its answers with "
                f"`rlaif reparse RUN_DIR` and its template, max_tokens and model (or try it first with "
                f"`rlaif bench-oracle`); judge_health.enabled=false turns the guard off.")
