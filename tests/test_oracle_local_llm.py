"""``local_llm`` on the tiny test model: P(A) from the answer letters, batched, swap mapped back."""

from __future__ import annotations

import asyncio

import pytest

from rlaif.assets import tiny_dir
from rlaif.oracle.local_llm import LocalLLMConfig, LocalLLMOracle
from rlaif.oracle.server import pair_from_texts
from rlaif.types import Outcome

pytestmark = pytest.mark.slow

SHORT = "Better?\n<<<PROMPT>>>\n{prompt}\n<<<RESPONSE A>>>\n{response_a}\n<<<RESPONSE B>>>\n{response_b}\n<<<END>>>\n"


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    t = tmp_path_factory.mktemp("tpl") / "short.txt"
    t.write_text(SHORT)
    o = LocalLLMOracle(LocalLLMConfig(model=str(tiny_dir()), template=str(t), batch_size=4, seed=0))
    asyncio.run(o.setup())
    return o


PAIRS = [pair_from_texts("The film", f"was good {i}", f"was bad, really bad {i}{'!' * i}") for i in range(6)]


def test_labels_are_well_formed_and_swaps_map_back(judge):
    labs = asyncio.run(judge.judge(PAIRS[:4]))
    for p, lab in zip(PAIRS, labs):
        assert lab.outcome in (Outcome.A, Outcome.B, Outcome.TIE)
        assert 0.0 <= lab.p_a <= 1.0 and lab.cost == 0.0 and lab.tokens_in > 0
        assert (lab.outcome is Outcome.A) == (lab.p_a > 0.5)
        # the same pair judged as shown, in its own order
        (direct,) = asyncio.run(judge.judge_shown([p.swapped() if lab.swapped else p]))
        assert lab.p_a == pytest.approx(1 - direct.p_a if lab.swapped else direct.p_a, abs=1e-5)


def test_batched_equals_one_by_one(judge):
    batched = asyncio.run(judge.judge_shown(PAIRS))  # different lengths: left padding
    for p, lab in zip(PAIRS, batched):
        (single,) = asyncio.run(judge.judge_shown([p]))
        assert lab.p_a == pytest.approx(single.p_a, abs=1e-4)


def test_prompt_longer_than_context_is_invalid(judge):
    long = pair_from_texts("The film", "good " * 200, "bad")
    (lab,) = asyncio.run(judge.judge_shown([long]))
    assert lab.outcome is Outcome.INVALID and "exceeds the model's context" in lab.reason


def test_identity_names_model_and_template(judge):
    ident = judge.identity()
    assert ident["kind"] == "local_llm" and ident["template"] == "short" and len(ident["template_hash"]) == 16


def test_reparse_leaves_its_labels_alone(judge, tmp_path, capsys):
    """Its verdicts are next-token probabilities, not text: ``rlaif reparse`` with its defaults keeps them
    (it used to read the stored "P(next=A)=..." line as an answer without a verdict: every label invalid)."""
    from rlaif.labels.budget import Budget
    from rlaif.labels.labeler import Labeler
    from rlaif.labels.ledger import Ledger
    from rlaif.labels.reparse import main as reparse_main

    run = tmp_path / "run"
    ledger = Ledger(run / "ledger.sqlite")
    labeler = Labeler(judge, Budget(labels=10), ledger, progress=False)
    labs = labeler.label(PAIRS[:4])
    labeler.close()
    before = [(r["outcome"], r["reason"], r["p_a"]) for r in ledger.rows()]
    ledger.close()
    assert all(l.outcome.decisive for l in labs) and len(before) == 4
    assert reparse_main([str(run)]) == 0
    assert "0 outcomes changed" in capsys.readouterr().out
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        assert [(r["outcome"], r["reason"], r["p_a"]) for r in ledger.rows()] == before
