"""What a judge benchmark measures, from the answers it bought (both orders of every pair).

Every pair is asked twice: as (a, b) and as (b, a) (the judge's own random swap is turned off, so
the benchmark controls the order). Outcomes are compared in the pair's own order.

* ``gold_agreement``: share of answers that match the gold judge's preference, over pairs where
  the gold is decisive (a judge tie counts half; invalid answers are left out) [bootstrap CI].
* ``self_consistency``: share of pairs whose two answers (both valid) agree after un-swapping.
* ``first_share``: share of decisive answers that prefer the completion shown first; 0.5 is
  unbiased. ``position_bias`` = 2 * first_share - 1: the share of answers that go to the first
  position whatever the pair (exact for a judge that, with that probability, answers "first").
* ``flip_rate``: the gold disagreement left once position bias is accounted for,
  1 - (gold_agreement - position_bias / 2) / (1 - position_bias): for a judge that answers "first"
  with probability b and otherwise the gold's answer flipped with probability f, this recovers f.
* tie / invalid / unparseable / failed rates over all requests (invalid = answered but unusable,
  unparseable = invalid with a raw answer, failed = no answer at all);
* cost from the judge's own ledger: tokens per label, US$ per 1,000 labels; time: seconds per
  1,000 labels (wall clock, at the judge's configured concurrency), labels per second,
  p50 / p95 latency per request.

A composite judge (a panel, a cascade) is also measured member by member (:func:`members`), on the
same answers its members gave it: each member's quality, its share of the requests it was asked
(a cascade's expensive judge: only the escalated ones) and its own cost from its ledger rows.
"""

from __future__ import annotations

import math

import numpy as np

from rlaif.report.intervals import bootstrap_interval
from rlaif.labels.judge_health import JudgeHealthConfig, verdict
from rlaif.types import Label, Outcome, Part


def _match(judge: Outcome, gold: Outcome) -> float | None:
    if judge is Outcome.INVALID:
        return None
    if judge is Outcome.TIE:
        return 0.5
    return 1.0 if judge is gold else 0.0


def quality(fwd: list[Label | None], rev: list[Label | None], gold: list[Label | None] | None,
            n_boot: int = 1000) -> dict:
    """``fwd[i]``: the answer for pair i shown (a, b); ``rev[i]``: shown (b, a), outcome in (a, b) order."""
    answers = [lab for lab in fwd + rev if lab is not None]
    n = len(answers)
    out: dict = {"pairs": len(fwd), "answers": n}
    if not n:
        return out
    out["tie_rate"] = sum(lab.outcome is Outcome.TIE for lab in answers) / n
    inv = [lab for lab in answers if lab.outcome is Outcome.INVALID]
    out["invalid_rate"] = len(inv) / n
    out["unparseable_rate"] = sum(lab.raw is not None for lab in inv) / n
    out["failed_rate"] = sum(lab.raw is None for lab in inv) / n
    # first position: in fwd the first shown is a (outcome A), in rev it is b (outcome B, pair order)
    firsts = [lab.outcome is Outcome.A for lab in fwd if lab is not None and lab.outcome.decisive] + \
             [lab.outcome is Outcome.B for lab in rev if lab is not None and lab.outcome.decisive]
    if firsts:
        out["first_share"] = float(np.mean(firsts))
        out["position_bias"] = 2.0 * out["first_share"] - 1.0
    # the run's health guard, on the same answers: would this judge be stopped in a run?
    why = verdict(n, len(inv), len(firsts), sum(firsts), JudgeHealthConfig())
    out["health"] = f"UNHEALTHY: {why}" if why else "ok"
    both = [(f.outcome, r.outcome) for f, r in zip(fwd, rev) if f is not None and r is not None
            and f.outcome is not Outcome.INVALID and r.outcome is not Outcome.INVALID]
    if both:
        out["self_consistency"] = float(np.mean([f is r for f, r in both]))
        out["consistency_pairs"] = len(both)
    if gold is not None:
        scores = []
        for f, r, g in zip(fwd, rev, gold):
            if g is None or not g.outcome.decisive:
                continue
            for lab in (f, r):
                if lab is not None and (s := _match(lab.outcome, g.outcome)) is not None:
                    scores.append(s)
        if scores:
            m, lo, hi = bootstrap_interval(scores, n_boot, 0)
            out.update(gold_agreement=m, gold_agreement_ci=[lo, hi], gold_answers=len(scores))
            b = out.get("position_bias", 0.0)
            if b < 1.0:
                out["flip_rate"] = 1.0 - (m - b / 2.0) / (1.0 - b)
    return out


def cost(totals: dict, answers: list[Label | None], wall_seconds: float) -> dict:
    """Cost and speed from the judge's ledger totals (paid rows) and the labelling wall time."""
    paid = int(totals["paid"])
    lat = [lab.latency for lab in answers if lab is not None and not lab.cached]
    out = {"labels_paid": paid, "dollars": float(totals["spent_dollars"]), "tokens": int(totals["spent_tokens"]),
           "tokens_per_label": totals["tokens"] / paid if paid else float("nan"),
           "dollars_per_1k": 1000.0 * totals["spent_dollars"] / paid if paid else float("nan"),
           "wall_seconds": wall_seconds,
           "seconds_per_1k": 1000.0 * wall_seconds / paid if paid else float("nan"),
           "labels_per_second": paid / wall_seconds if wall_seconds > 0 else math.inf,
           "latency_p50": float(np.percentile(lat, 50)) if lat else float("nan"),
           "latency_p95": float(np.percentile(lat, 95)) if lat else float("nan")}
    return out


def members(fwd: list[tuple[Part, ...] | None], rev: list[tuple[Part, ...] | None],
            gold: list[Label | None] | None, n_boot: int = 1000) -> list[dict]:
    """Each member of a composite judge measured on its own answers: ``fwd[i]`` / ``rev[i]`` the parts of
    the composite's answers for pair i shown (a, b) / (b, a) (in (a, b) order), None where not bought here."""
    names: dict[tuple[str, str], None] = {}
    for parts in fwd + rev:
        for p in parts or ():
            names.setdefault((p.role, p.label.judge), None)
    requests = sum(1 for parts in fwd + rev if parts is not None)
    out = []
    for role, judge in names:
        def of(parts):
            got = [p.label for p in parts or () if (p.role, p.label.judge) == (role, judge)]
            return got[0] if got else None
        f, r = [of(x) for x in fwd], [of(x) for x in rev]
        answers = [lab for lab in f + r if lab is not None]
        q = quality(f, r, gold, n_boot)
        dollars = sum(float(lab.cost) for lab in answers)
        tokens = sum(int(lab.tokens_in) + int(lab.tokens_out) for lab in answers)
        lat = [float(lab.latency) for lab in answers]
        out.append({**q, "judge": judge, "role": role, "asked_share": len(answers) / requests if requests else None,
                    "dollars": dollars, "tokens": tokens,
                    "tokens_per_label": tokens / len(answers) if answers else float("nan"),
                    "dollars_per_1k": 1000.0 * dollars / len(answers) if answers else float("nan"),
                    "latency_p50": float(np.percentile(lat, 50)) if lat else float("nan"),
                    "latency_p95": float(np.percentile(lat, 95)) if lat else float("nan")})
    return out
