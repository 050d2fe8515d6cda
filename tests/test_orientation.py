"""Order and orientation agree everywhere: the judge's both-orders merge, ``rlaif reparse`` re-reading
its stored answers, and a stored label read back (from the ledger, or within one call) for the
reversed pair. No server: the openai judge's one HTTP ask is replaced by canned answers."""

from __future__ import annotations

import asyncio
import io

import pytest

from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import Ledger, request_key
from rlaif.labels.reparse import reparse
from rlaif.oracle import parsing
from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
from rlaif.types import Completion, Label, Outcome, Pair, Prompt

# per pair: what the judge answers when shown (a, b), then when shown (b, a): (text, finish_reason);
# a text of None is a request that got no answer at all (retries exhausted)
ANSWERS = [
    (("Preferred: A", "stop"), ("Preferred: B", "stop")),  # consistent: A
    (("Preferred: A", "stop"), ("Preferred: A", "stop")),  # position bias: the orders disagree
    (("thinking... A", "length"), ("Preferred: B", "stop")),  # first order cut off at max_tokens
    (("Preferred: B", "stop"), ("I cannot decide", "stop")),  # second order unparseable
    (("Preferred: tie", "stop"), ("tie", "stop")),  # a tie both ways
    ((None, None), ("Preferred: B", "stop")),  # one order got no answer
    (("Preferred: B", "stop"), ("Preferred: A", "stop")),  # consistent: B
]


def _pairs() -> list[Pair]:
    out = []
    for i in range(len(ANSWERS)):
        p = Prompt(f"p{i}", f"prompt {i}", (1, i))
        out.append(Pair(p, Completion(p, f"first {i}", (2, i)), Completion(p, f"second {i}", (3, i))))
    return out


def _oracle(on_disagreement: str) -> OpenAIOracle:
    oracle = OpenAIOracle(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="judge", free=True,
                                       both_orders=True, on_disagreement=on_disagreement, mode="logprobs"))
    answers = {}
    for i, (ab, ba) in enumerate(ANSWERS):
        answers[(f"first {i}", f"second {i}")] = ab
        answers[(f"second {i}", f"first {i}")] = ba

    async def ask(shown: Pair) -> Label:  # what OpenAIOracle._answer makes of a chat completion
        text, finish = answers[(shown.a.text, shown.b.text)]
        if text is None:
            return Label.invalid("gave up after 2 attempts: HTTP 500", attempts=2)
        verdict = parsing.parse_verdict(text, finish_reason=finish)
        p_a = {Outcome.A: 0.8, Outcome.B: 0.3}.get(verdict.outcome)
        return Label(outcome=verdict.outcome, reason=verdict.reason, p_a=p_a, raw=text, tokens_in=10,
                     tokens_out=2, finish_reason=finish)

    async def no_preflight() -> None:
        pass

    oracle._ask = ask
    oracle.setup = no_preflight
    return oracle


def _fields(lab: Label) -> tuple:
    return lab.outcome, lab.p_a, lab.swapped, lab.raw, lab.reason, lab.finish_reason


def test_label_flipped_and_oriented():
    lab = Label(outcome=Outcome.A, p_a=0.75, raw="Preferred: A", reason="r", swapped=False, finish_reason="stop")
    assert _fields(lab.flipped()) == (Outcome.B, 0.25, False, "Preferred: A", "r", "stop")
    assert lab.oriented(False) is lab
    assert _fields(lab.oriented(True)) == (Outcome.B, 0.25, True, "Preferred: A", "r", "stop")
    assert _fields(lab.oriented(True).oriented(False)) == _fields(lab)
    tie = Label(outcome=Outcome.TIE)
    assert tie.flipped().outcome is Outcome.TIE and tie.flipped().p_a is None


@pytest.mark.parametrize("on_disagreement", ["tie", "invalid"])
def test_both_orders_merge_reparse_and_reversed_read_back_agree(tmp_path, on_disagreement):
    oracle = _oracle(on_disagreement)
    pairs = _pairs()
    swaps = {p.id: i % 2 == 1 for i, p in enumerate(pairs)}  # both showings, whatever the seed says
    reverse = [p.swapped() for p in pairs]
    for p, q in zip(pairs, reverse):  # the reversed pair shown the same way round: the same request
        swaps[q.id] = not swaps[p.id]
    oracle.swap_for = lambda pair: swaps[pair.id]
    ident = oracle.identity()
    assert all(request_key(ident, p, swaps[p.id]) == request_key(ident, q, swaps[q.id])
               for p, q in zip(pairs, reverse))

    judged = asyncio.run(oracle.judge(pairs))
    judged_reverse = asyncio.run(oracle.judge(reverse))
    assert {Outcome.A, Outcome.B, Outcome.TIE, Outcome.INVALID} == {lab.outcome for lab in judged}
    assert sum("disagree" in (lab.reason or "") for lab in judged) == 1

    run = tmp_path / "run"
    ledger = Ledger(run / "ledger.sqlite")
    labeler = Labeler(oracle, None, ledger, progress=False)
    try:
        both = labeler.label(pairs + reverse)  # each request asked once; the reversed pair re-oriented
        again = labeler.label(reverse)  # read back from the ledger
    finally:
        labeler.close()
        ledger.close()
    assert labeler.stats["paid"] == len(pairs) and labeler.last_stats["cached"] == len(pairs)
    assert [_fields(lab) for lab in both] == [_fields(lab) for lab in judged + judged_reverse]
    assert [_fields(lab) for lab in again] == [_fields(lab) for lab in judged_reverse]

    # reparse with the judge's own parser finds exactly what the judge's merge said
    out = io.StringIO()
    summary = reparse(run, dry_run=True, out=out)
    assert summary["changed"] == 0 and "reasons changed" not in out.getvalue(), out.getvalue()
    assert summary["reparsed"] == len(pairs) - 1 and summary["skipped"] == 1  # the order with no answer
