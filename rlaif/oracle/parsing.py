"""Reading an LLM judge's answer: only its final verdict line decides.

The answer format asked for by every template is one comparison sentence, then a final line
``Preferred: A`` or ``Preferred: B``. Only the last non-empty line is read, so a verdict quoted
earlier in the answer (for instance a completion that itself contains "Preferred: B", echoed
by the judge) never decides the label. Anything else is INVALID with a reason -- never a side.

Accepted final lines (case-insensitive keyword, optional markdown emphasis and quotes):
``Preferred: A`` / ``Answer: B`` / ``Verdict: (A)`` / ``Preferred: Response B`` / ``A`` /
``Preferred: tie`` (a tie, recorded as such; the templates ask the judge to choose).

An answer that did not end by itself -- cut off at ``max_tokens`` (``finish_reason == "length"``)
or by the server's content filter -- is INVALID whatever its last line says: a weak judge caught
in a repetition loop (``...A: A\n\nA``) stops on a letter by chance, not by a verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from rlaif.types import Outcome

_KEY = r"(?:preferred|preference|answer|final answer|verdict|choice|winner|better)"
_SIDE = r"(?:response|option|completion|summary|continuation)?"
_FINAL = re.compile(rf"^(?:{_KEY}\s*[:=\-]\s*)?{_SIDE}\s*\(?\s*(?P<v>[AB]|tie)\s*\)?\s*\.?$", re.I)
_STRIP = str.maketrans("", "", "*`\"'_#>[]")


@dataclass
class Verdict:
    outcome: Outcome  # in the order shown to the judge
    reason: str | None = None


def _short(s: str, n: int = 80) -> str:
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 3] + "..."


def final_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# finish reasons of an answer that was stopped before its end: never a verdict
CUT_OFF = {"length": "cut off at max_tokens", "content_filter": "cut off by the server's content filter"}
# stored as the finish reason of a "paid" body that is not a chat answer at all (not JSON, no choices)
# or of a both-orders member that got no answer: its raw text is not an answer to parse
NOT_AN_ANSWER = "not_an_answer"


def cut_off(finish_reason: str | None, text: str | None = None) -> str | None:
    """The reason an answer with this finish reason is INVALID whatever it says, or None."""
    why = CUT_OFF.get(finish_reason or "")
    if why is None:
        return None
    last = final_line(text or "")
    return f"{why} (finish_reason={finish_reason})" + (f": {_short(last)!r}" if last else "")


def join_finish_reasons(reasons: Iterable[str | None]) -> str | None:
    """One stored value for the finish reasons of a both-orders answer (None when none is known)."""
    reasons = list(reasons)
    return None if all(r is None for r in reasons) else ",".join(r or "" for r in reasons)


def split_finish_reasons(stored: str | None, n: int) -> list[str | None]:
    """The ``n`` finish reasons a stored value holds (all None where it does not hold ``n``)."""
    if n == 1:
        return [stored]
    parts = stored.split(",") if stored else []
    return [p or None for p in parts] if len(parts) == n else [None] * n


def parse_verdict(text: str | None, *, finish_reason: str | None = None, truncated: bool = False) -> Verdict:
    """The verdict on the judge's final line, in the order shown.

    ``finish_reason``: why the answer ended, as the server said; a cut-off answer (``"length"``,
    ``"content_filter"``) is INVALID whatever it ends with. ``truncated=True`` means ``"length"``.
    """
    why = cut_off(finish_reason or ("length" if truncated else None), text)
    if why is not None:
        return Verdict(Outcome.INVALID, why)
    if text is None or not text.strip():
        return Verdict(Outcome.INVALID, "empty answer")
    last = final_line(text).translate(_STRIP).strip()
    m = _FINAL.match(last)
    if m is None:
        return Verdict(Outcome.INVALID, f"no verdict on the final line: {_short(final_line(text))!r}")
    v = m.group("v")
    if v.lower() == "tie":
        return Verdict(Outcome.TIE)
    if v not in ("A", "B") and not re.match(rf"^{_KEY}", last, re.I):
        # a bare lowercase 'a' / 'b' line is prose, not a verdict
        return Verdict(Outcome.INVALID, f"no verdict on the final line: {_short(final_line(text))!r}")
    return Verdict(Outcome(v.upper()))


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def p_a_from_logprobs(content: Iterable[Any] | None, verdict: Outcome) -> float | None:
    """P(A) (shown order) from the top log-probs of the answer token, where the server gave them.

    ``content`` is the OpenAI ``choices[0].logprobs.content`` list. The answer token is the last
    generated token that reads as the verdict letter; P(A) = p(A) / (p(A) + p(B)) over the top
    alternatives at that position (variants such as " A" count as A).
    """
    if content is None or not verdict.decisive:
        return None
    tokens = list(content)
    for tok in reversed(tokens):
        if (_get(tok, "token") or "").strip().strip("*\"'()") != verdict.value:
            continue
        mass = {"A": 0.0, "B": 0.0}
        tops = _get(tok, "top_logprobs") or []
        for alt in tops:
            letter = (_get(alt, "token") or "").strip().strip("*\"'()")
            if letter in mass:
                mass[letter] += math.exp(_get(alt, "logprob"))
        if not tops:  # the server gave only the sampled token's own log-prob
            mass[verdict.value] = math.exp(_get(tok, "logprob"))
        other = "B" if verdict is Outcome.A else "A"
        if mass[other] == 0.0:
            # the other letter is not listed: bound its probability from above, so P(A) errs towards 1/2
            mass[other] = (min(math.exp(_get(a, "logprob")) for a in tops) if tops
                           else max(0.0, 1.0 - mass[verdict.value]))
        total = mass["A"] + mass["B"]
        if total <= 0:
            return None
        return mass["A"] / total
    return None


# -- alpaca_eval's parsers (an annotator folder as the judge, rlaif.oracle.annotator) ----------------
def _preference(pref: int | None, reason: str) -> Verdict:
    """alpaca_eval's preference (1: output_1, the completion shown first; 2: the other) as a verdict."""
    if pref == 1:
        return Verdict(Outcome.A)
    if pref == 2:
        return Verdict(Outcome.B)
    return Verdict(Outcome.INVALID, reason)


def regex_preference(text: str, outputs_to_match: dict[str, str]) -> int | None:
    """alpaca_eval's ``regex_parser``: the output whose pattern matches first in the answer."""
    found = [(m.start(), int(k)) for k, pat in outputs_to_match.items() if (m := re.search(pat, text))]
    return min(found)[1] if found else None


def ranking_preference(text: str) -> int | None:
    """alpaca_eval's ``ranking_parser``: ``[{'model': 'model_1', 'rank': 1}, ...]``; model_1's rank."""
    import ast

    for literal in reversed(re.findall(r"\[[^\[\]]*\]", text, re.S)):
        try:
            ranks = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue
        if isinstance(ranks, list):
            rank = next((d.get("rank") for d in ranks if isinstance(d, dict) and d.get("model") == "model_1"), None)
            if rank in (1, 2):
                return int(rank)
    return None


def lmsys_verdict(text: str) -> Verdict:
    """alpaca_eval's ``lmsys_parser``: ``[[A]]``, ``[[B]]``, or ``[[C]]`` for a tie (the last one given)."""
    found = re.findall(r"\[\[([ABC])\]\]", text)
    if not found:
        return Verdict(Outcome.INVALID, f"no [[A]] / [[B]] / [[C]] in the answer: {_short(final_line(text))!r}")
    return Verdict(Outcome.TIE) if found[-1] == "C" else Verdict(Outcome(found[-1]))


def parse_alpaca_eval(text: str | None, parser: str, kwargs: dict, *, finish_reason: str | None = None) -> Verdict:
    """The verdict of an answer to an alpaca_eval annotator's prompt, read with its parser; a cut-off or
    empty answer is INVALID first, as with :func:`parse_verdict`."""
    why = cut_off(finish_reason, text)
    if why is not None:
        return Verdict(Outcome.INVALID, why)
    if text is None or not text.strip():
        return Verdict(Outcome.INVALID, "empty answer")
    if parser == "lmsys_parser":
        return lmsys_verdict(text)
    if parser == "ranking_parser":
        return _preference(ranking_preference(text), f"no ranking of model_1 in the answer: {_short(text)!r}")
    return _preference(regex_preference(text, kwargs.get("outputs_to_match") or {}),
                       f"no output pattern matches the answer: {_short(text)!r}")
