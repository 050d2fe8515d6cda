"""Judge templates people already have: Jinja2 chat messages and alpaca_eval-style annotator folders,
against a real local judge server; plain templates that lack a placeholder are refused in one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rlaif.oracle import templates
from rlaif.oracle.annotator import AnnotatorError
from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle
from rlaif.oracle.parsing import parse_alpaca_eval
from rlaif.types import Outcome

from helpers import make_pairs, rlaif, serve_judge, tiny

CHAT = textwrap.dedent("""\
    - role: system
      content: You are a careful film critic who compares two continuations of a movie review.
    - role: user
      content: |-
        Review opening: {{ prompt }}

        Continuation A: {{ response_a }}

        Continuation B: {{ response_b }}

        Which continuation is more positive? End with a line "Preferred: A" or "Preferred: B".
    """)

# alpaca_eval's own layout: evaluators_configs/<name>/configs.yaml, prompt_template relative to the parent
ALPACA_PROMPT = textwrap.dedent('''\
    <|im_start|>system
    You are a helpful assistant, that ranks models by the quality of their answers.
    <|im_end|>
    <|im_start|>user
    Select the output (a) or (b) that best matches the given instruction.

    # Instruction:
    {instruction}

    # Output (a):
    {output_1}

    # Output (b):
    {output_2}

    # Which is best, Output (a) or Output (b)? Answer "Preferred: A" for (a) or "Preferred: B" for (b).
    <|im_end|>
    ''')


def alpaca_dir(root: Path, name: str = "my_judge", **extra: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "basic_prompt.txt").write_text(ALPACA_PROMPT)
    lines = [f"{name}:", f'  prompt_template: "{name}/basic_prompt.txt"', '  fn_completions: "openai_completions"',
             "  completions_kwargs:", '    model_name: "judge"', "    max_tokens: 77", "    temperature: 0",
             '  fn_completion_parser: "regex_parser"', "  completion_parser_kwargs:", "    outputs_to_match:",
             "      1: 'Preferred: A'", "      2: 'Preferred: B'", "  batch_size: 1"]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    (d / "configs.yaml").write_text("\n".join(lines) + "\n")
    return d


def test_a_chat_template_renders_system_and_user_messages(tmp_path):
    path = tmp_path / "critic.yaml"
    path.write_text(CHAT)
    t = templates.load(str(path))
    msgs = t.messages("The film", "was great {{ response_b }}", "was bad")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Continuation A: was great {{ response_b }}" in msgs[1]["content"]  # a completion stays text
    assert t.extract_pair(msgs[1]["content"]) == ("The film", "was great {{ response_b }}", "was bad")
    assert t.parse("Comparison: A is nicer.\nPreferred: A").outcome is Outcome.A
    # the content hash is the judge's identity (ledger key): editing the template re-keys it
    ident = OpenAIOracle(OpenAIConfig(free=True, template=str(path))).identity()
    assert ident["template"] == "critic" and ident["template_hash"] == t.hash
    path.write_text(CHAT.replace("careful", "strict"))
    templates._load_file.cache_clear()
    assert templates.load(str(path)).hash != t.hash
    # a shipped one, by name: its marker block lets serve-judge read any pair without --template
    shipped = templates.load("helpfulness_chat")
    msgs = shipped.messages("q", "a <<<END>>>", "b")
    assert shipped.kind == "chat" and templates.extract(msgs[-1]["content"]) == ("q", "a << <END>>>", "b")
    # JSON, {messages: [...]} form
    js = tmp_path / "j.json"
    js.write_text('{"messages": [{"role": "user", "content": "{{ prompt }} | {{ response_a }} | {{ response_b }}"}]}')
    assert templates.load(str(js)).messages("p", "a", "b") == [{"role": "user", "content": "p | a | b"}]


@pytest.mark.parametrize("content, words", [
    ("{{ prompt }} {{ response_a }}", ["lacks {{ response_b }}", "{{ prompt }}, {{ response_a }}, {{ response_b }}"]),
    ("{{ prompt }} {{ response_a }} {{ response_b }} {{ instruction }}", ["unknown instruction"]),
    ("{{ prompt }} {% if %}", ["Jinja2 syntax error"]),
])
def test_a_chat_template_with_wrong_variables_is_one_line(tmp_path, content, words):
    path = tmp_path / "bad.yaml"
    path.write_text(f"- role: user\n  content: '{content}'\n")
    with pytest.raises(templates.TemplateError) as e:
        templates.load(str(path))
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_a_plain_template_missing_a_placeholder_is_refused_at_start_up(tmp_path):
    bad = tmp_path / "mine.txt"
    bad.write_text("Which is better?\n<<<PROMPT>>>\n{prompt}\n<<<RESPONSE A>>>\n{response_a}\n<<<END>>>\n")
    with pytest.raises(templates.TemplateError, match=r"lacks \{response_b\}.*needs \{prompt\}, \{response_a\} and "
                                                      r"\{response_b\}"):
        templates.load(str(bad))
    run = tmp_path / "run"
    r = rlaif("run", *tiny("oracle=openai", "oracle.free=true", "oracle.base_url=http://127.0.0.1:9/v1",
                           f"oracle.template={bad}"), f"hydra.run.dir={run}", full_error=False)
    assert r.returncode == 2, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "lacks {response_b}" in err[0] and "{prompt}, {response_a} and {response_b}" in err[0]
    assert not (run / "ledger.sqlite").exists()


def test_an_annotator_folder_maps_to_a_judge(tmp_path):
    d = alpaca_dir(tmp_path)
    t = templates.load(str(d))
    assert t.kind == "alpaca_eval" and t.name == "my_judge"
    msgs = t.messages("Write a review", "great film", "bad film")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "# Output (a):\ngreat film\n\n# Output (b):\nbad film" in msgs[1]["content"]
    oracle = OpenAIOracle(OpenAIConfig(free=True, template=str(d)))
    assert (oracle.cfg.model, oracle.cfg.max_tokens, oracle.cfg.temperature) == ("judge", 77, 0)
    # a value given explicitly wins over the annotator's
    assert OpenAIOracle(OpenAIConfig(free=True, template=str(d), model="other")).cfg.model == "other"
    assert oracle.identity()["template_hash"] == t.hash and oracle.identity()["max_tokens"] == 77
    (d / "basic_prompt.txt").write_text(ALPACA_PROMPT.replace("best matches", "better follows"))
    templates._load_file.cache_clear()
    assert templates.load(str(d)).hash != t.hash


def test_what_does_not_map_is_listed_in_one_line(tmp_path):
    d = alpaca_dir(tmp_path, batch_size_note="x")
    text = (d / "configs.yaml").read_text().replace('"regex_parser"', '"logprob_parser"').replace(
        "batch_size: 1", "batch_size: 5").replace("    temperature: 0", "    temperature: 0\n    top_logprobs: 5")
    (d / "configs.yaml").write_text(text)
    with pytest.raises(AnnotatorError) as e:
        templates.load(str(d))
    msg = str(e.value)
    assert "\n" not in msg
    for w in ("batch_size_note", "fn_completion_parser: logprob_parser", "batch_size: 5",
              "completions_kwargs.top_logprobs"):
        assert w in msg, msg
    (d / "basic_prompt.txt").write_text("no placeholders at all")
    (d / "configs.yaml").write_text(text.replace('"logprob_parser"', '"regex_parser"').replace("batch_size: 5", "batch_size: 1")
                                    .replace("    top_logprobs: 5\n", "").replace("  batch_size_note: x\n", ""))
    with pytest.raises(AnnotatorError, match=r"missing \{instruction\}, \{output_1\}, \{output_2\}"):
        templates.load(str(d))


def test_alpaca_eval_parsers():
    assert parse_alpaca_eval("Output (b) is better", "regex_parser",
                             {"outputs_to_match": {"1": r"Output \(a\)", "2": r"Output \(b\)"}}).outcome is Outcome.B
    assert parse_alpaca_eval("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]",
                             "ranking_parser", {}).outcome is Outcome.B
    assert parse_alpaca_eval("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
                             "ranking_parser", {}).outcome is Outcome.A
    assert parse_alpaca_eval("I think [[C]]", "lmsys_parser", {}).outcome is Outcome.TIE
    v = parse_alpaca_eval("[[A]] and more", "lmsys_parser", {}, finish_reason="length")
    assert v.outcome is Outcome.INVALID and "max_tokens" in v.reason
    assert parse_alpaca_eval("no idea", "regex_parser", {"outputs_to_match": {"1": "x1", "2": "x2"}}).outcome \
        is Outcome.INVALID


@pytest.mark.parametrize("kind", ["chat", "alpaca_eval"])
def test_templates_against_a_real_judge_server(tmp_path, kind):
    if kind == "chat":
        spec = tmp_path / "critic.yaml"
        spec.write_text(CHAT)
    else:
        spec = alpaca_dir(tmp_path)
    pairs = make_pairs(12)  # A is always the positive one: the keyword judge prefers it, in either showing
    with serve_judge("--template", str(spec)) as base:
        oracle = OpenAIOracle(OpenAIConfig(base_url=base + "/v1", model="judge", free=True, template=str(spec),
                                           concurrency=4, max_attempts=2))
        labels = oracle.label(pairs)
    assert [l.outcome for l in labels] == [Outcome.A] * 12, [l.reason for l in labels]
    assert any(l.swapped for l in labels) and any(not l.swapped for l in labels)
