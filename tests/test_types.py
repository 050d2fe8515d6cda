"""The data types: prompt -> completion -> pair -> label -> TRL preference row."""

import json
import math

import pytest

from rlaif.types import Completion, Label, Outcome, Pair, Prompt, preference_row


def _pair():
    p = Prompt("p1", "The film was", (10, 11, 12))
    a = Completion(p, " great fun", (20, 21), logprob=-3.0)
    b = Completion(p, " a bore", (30, 31, 32), logprob=-4.0)
    return Pair(p, a, b, round=2, scores={"entropy": 1.5})


def test_preference_row_is_trl_format_with_token_ids():
    pair = _pair()
    row = preference_row(pair, Label(outcome=Outcome.B, judge="j", cost=0.01))
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("The film was", " a bore", " great fun")
    assert row["prompt_input_ids"] == [10, 11, 12]
    assert row["chosen_input_ids"] == [30, 31, 32] and row["rejected_input_ids"] == [20, 21]
    assert row["round"] == 2 and json.loads(row["scores"]) == {"entropy": 1.5} and row["cost"] == 0.01
    assert math.isnan(row["p_a"])  # a float every time: NaN where the judge gives no probability
    row_a = preference_row(pair, Label(outcome="A"))
    assert row_a["chosen"] == " great fun"


@pytest.mark.parametrize("outcome", [Outcome.TIE, Outcome.INVALID])
def test_ties_and_invalid_make_no_row(outcome):
    assert preference_row(_pair(), Label(outcome=outcome, reason="x")) is None


def test_invalid_is_never_a_side():
    lab = Label.invalid("unparseable answer")
    assert lab.outcome is Outcome.INVALID and not lab.outcome.decisive and lab.reason == "unparseable answer"
    assert lab.outcome.flipped() is Outcome.INVALID
    assert Label(outcome="invalid").reason == "unspecified"  # an invalid label always says why
    with pytest.raises(ValueError):
        Label(outcome="maybe")


def test_pair_identity_order_and_roundtrip():
    pair = _pair()
    assert pair.id == _pair().id
    assert pair.swapped().id != pair.id and pair.swapped().swapped().id == pair.id
    back = Pair.from_dict(pair.to_dict())
    assert back.id == pair.id and back.a.token_ids == pair.a.token_ids and back.scores == pair.scores
    assert Label.from_dict(Label(outcome="A", p_a=0.8).to_dict()).p_a == 0.8


def test_pair_rejects_completions_of_another_prompt():
    p, q = Prompt("p", "x", (1,)), Prompt("q", "y", (2,))
    with pytest.raises(ValueError):
        Pair(p, Completion(p, "a", (3,)), Completion(q, "b", (4,)))


def test_completion_key_is_token_level():
    p = Prompt("p", "x", (1, 2))
    assert Completion(p, "same text", (5, 6)).key != Completion(p, "same text", (5, 7)).key
    assert Completion(p, "a", (5, 6)).key == Completion(p, "b", (5, 6)).key
