"""Verdict parsing and judge templates."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from rlaif.oracle import templates
from rlaif.oracle.parsing import p_a_from_logprobs, parse_verdict
from rlaif.types import Outcome


@pytest.mark.parametrize("text,want", [
    ("Comparison: A is kinder.\nPreferred: A", Outcome.A),
    ("Comparison: B is kinder.\nPreferred: B\n\n", Outcome.B),
    ("Comparison: x\n**Preferred:** `B`", Outcome.B),
    ("Comparison: x\nPreferred: \"A\"", Outcome.A),
    ("Comparison: x\nAnswer: (B)", Outcome.B),
    ("Comparison: x\nPreferred: Response A.", Outcome.A),
    ("Comparison: x\nB", Outcome.B),
    ("Comparison: x\nPreferred: tie", Outcome.TIE),
])
def test_final_line_decides(text, want):
    assert parse_verdict(text).outcome is want


@pytest.mark.parametrize("text,reason", [
    ("", "empty answer"),
    (None, "empty answer"),
    ("   \n ", "empty answer"),
    # a verdict quoted earlier (e.g. from a completion) never decides
    ('Comparison: Response A says "Preferred: B".\nI cannot decide.', "no verdict on the final line"),
    ("Preferred: B\nComparison: both are fine", "no verdict on the final line"),
    ('Comparison: x\nPreferred: <"A" or "B">', "no verdict on the final line"),
    ("Comparison: x\nPreferred: A or B", "no verdict on the final line"),
    ("Comparison: x\nb", "no verdict on the final line"),
])
def test_anything_else_is_invalid_with_reason(text, reason):
    v = parse_verdict(text)
    assert v.outcome is Outcome.INVALID and v.reason.startswith(reason)


def test_truncated_answer_says_so():
    v = parse_verdict("Comparison: A is much better because", truncated=True)
    assert v.outcome is Outcome.INVALID and "max_tokens" in v.reason


@pytest.mark.parametrize("finish,why", [("length", "cut off at max_tokens (finish_reason=length)"),
                                        ("content_filter", "cut off by the server's content filter")])
def test_a_cut_off_answer_is_invalid_whatever_it_ends_with(finish, why):
    # a weak judge's repetition loop, cut off at max_tokens on a letter: the letter is no verdict
    loop = "Comparison: Response A: A\n\nA: A\n\nA: A\n\nA"
    for text in (loop, loop + "\nPreferred: B", ""):
        v = parse_verdict(text, finish_reason=finish)
        assert v.outcome is Outcome.INVALID and v.reason.startswith(why), (text, v)
    assert parse_verdict(loop, truncated=True).reason.startswith("cut off at max_tokens (finish_reason=length): 'A'")
    assert parse_verdict(loop, finish_reason="stop").outcome is Outcome.A  # ended by itself: read as before
    assert parse_verdict(loop).outcome is Outcome.A  # finish reason unknown: as before


def test_p_a_from_top_logprobs():
    content = [{"token": "Preferred", "logprob": 0.0, "top_logprobs": []},
               {"token": ":", "logprob": 0.0, "top_logprobs": []},
               {"token": " B", "logprob": math.log(0.7),
                "top_logprobs": [{"token": " B", "logprob": math.log(0.7)}, {"token": " A", "logprob": math.log(0.2)},
                                 {"token": "A", "logprob": math.log(0.05)}]}]
    assert p_a_from_logprobs(content, Outcome.B) == pytest.approx(0.25 / 0.95)
    # the other letter absent from the top-k: bounded by the smallest listed probability
    content[-1]["top_logprobs"] = [{"token": "B", "logprob": math.log(0.9)}, {"token": "x", "logprob": math.log(0.01)}]
    assert p_a_from_logprobs(content, Outcome.B) == pytest.approx(0.01 / 0.91)
    assert p_a_from_logprobs(content, Outcome.INVALID) is None
    assert p_a_from_logprobs(None, Outcome.A) is None


def test_templates_render_and_read_back():
    for t in templates.available():
        assert {"imdb", "tldr", "helpfulness"} <= {x.name for x in templates.available()}
        r = t.render("Opening <<<RESPONSE A>>>", "first {response_b}", "second\nline")
        assert templates.extract(r) == ("Opening << <RESPONSE A>>>", "first {response_b}", "second\nline")
        assert templates.detect(r) == t.name
        assert r.rstrip().endswith('Preferred: <"A" or "B">')


def test_template_choice_and_errors(tmp_path):
    assert templates.choose(None, None).name == "helpfulness"
    assert templates.choose(None, SimpleNamespace(rubric="imdb")).name == "imdb"
    assert templates.choose("tldr", SimpleNamespace(rubric="imdb")).name == "tldr"
    assert "most positive sentiment" in templates.load("imdb").text
    with pytest.raises(templates.TemplateError, match="not found"):
        templates.load("nope")
    bad = tmp_path / "bad.txt"
    bad.write_text("Which is better? {prompt} {response_a} {response_b}")
    with pytest.raises(templates.TemplateError, match="must sit alone"):
        templates.load(str(bad))
    with pytest.raises(templates.TemplateError, match="pair markers"):
        templates.extract("no markers here")
