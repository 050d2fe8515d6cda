"""``task=hf`` (and chat rows in ``task=jsonl``): prompts from local files `datasets` opens (parquet,
arrow, jsonl, csv, save_to_disk), chat messages through the policy's chat template, train / eval by a
split, a column or a seeded fraction, too-long prompts dropped with a count or refused, and one-line
start-up errors. Real datasets and tokenizers; one real run on a chat dataset, exported and trained
with TRL's DPOTrainer in its conversational format."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from helpers import cfg, rlaif, tiny
from rlaif.run.build import validate
from rlaif.tasks import TaskError, load_prompts

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The tiny model with a chat template (the built one has none)."""
    from transformers import AutoTokenizer

    from rlaif.assets import tiny_dir

    d = tmp_path_factory.mktemp("m") / "tiny-chat"
    shutil.copytree(tiny_dir(), d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    return d


def _chats(n=40, long_every=0):
    rows = []
    for i in range(n):
        q = f"Tell me about film {i}." + (" and more" * 60 if long_every and i % long_every == 0 else "")
        rows.append({"id": f"q{i}", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": q},
                                                 {"role": "assistant", "content": "An answer to cut."}]})
    return rows


def _task(path, *over):
    return cfg("task=hf", f"task.path={path}", "policy=tiny", "task.max_prompt_tokens=64", *over).task


def _tok(d):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(d)


def test_chat_parquet_gets_the_chat_template_and_the_judge_the_last_user_message(tmp_path, chat_model):
    from datasets import Dataset

    Dataset.from_list(_chats()).to_parquet(str(tmp_path / "chats.parquet"))
    task, tok = _task(tmp_path / "chats.parquet", "task.eval_prompts=8"), _tok(chat_model)
    ps = load_prompts(task, tok)
    assert (len(ps.train), len(ps.eval)) == (32, 8)
    p = ps.eval[0]
    assert p.text.startswith("Tell me about film") and p.messages[-1] == ("user", p.text)
    assert [r for r, _ in p.messages] == ["system", "user"]  # the turns after the last user turn are cut
    chat = [{"role": r, "content": c} for r, c in p.messages]
    want = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert list(p.token_ids) == list(want)
    again = load_prompts(task, tok)  # the fraction split is seeded
    assert [q.id for q in again.eval] == [q.id for q in ps.eval]
    raw = load_prompts(_task(tmp_path / "chats.parquet", "task.chat_template=false"), tok).eval[0]
    assert raw.messages is None and "system" not in tok.decode(raw.token_ids)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "arrow", "disk"])
def test_every_local_format_and_split_kind(tmp_path, chat_model, fmt):
    from datasets import Dataset, DatasetDict

    rows = [{"id": f"p{i}", "prompt": f"Write a line about film {i}.", "part": "eval" if i < 5 else "train"}
            for i in range(30)]
    ds = Dataset.from_list(rows)
    over = ["task.split_column=part"]
    if fmt == "jsonl":
        path = tmp_path / "p.jsonl"
        ds.to_json(str(path))
    elif fmt == "csv":
        path = tmp_path / "p.csv"
        ds.to_csv(str(path), index=False)
    elif fmt == "arrow":
        path = tmp_path / "arrow"
        ds.save_to_disk(str(path))
        path = next(path.glob("*.arrow"))
    else:
        path = tmp_path / "dd"
        DatasetDict(train=ds.select(range(5, 30)), test=ds.select(range(5))).save_to_disk(str(path))
        over = ["task.eval_split=test"]
    tok = _tok(chat_model)
    ps = load_prompts(_task(path, *over), tok)
    assert sorted(p.id for p in ps.eval) == [f"p{i}" for i in range(5)] and len(ps.train) == 25
    # plain prompts of task=hf are instructions: one user turn through the template (auto)
    assert ps.eval[0].messages == (("user", ps.eval[0].text),)
    assert tok.decode(ps.eval[0].token_ids).startswith("user: ")


def test_long_prompts_are_dropped_with_a_count_or_refused(tmp_path, chat_model, caplog):
    from datasets import Dataset

    Dataset.from_list(_chats(40, long_every=4)).to_parquet(str(tmp_path / "c.parquet"))
    with caplog.at_level(logging.INFO, logger="rlaif.tasks"):
        ps = load_prompts(_task(tmp_path / "c.parquet"), _tok(chat_model))
    assert len(ps.train) + len(ps.eval) == 30
    assert "dropped 10 of 40 prompts" in caplog.text
    with pytest.raises(TaskError, match="more than task.max_prompt_tokens=64"):
        load_prompts(_task(tmp_path / "c.parquet", "task.long_prompts=error"), _tok(chat_model))


def test_jsonl_task_accepts_messages_rows(tmp_path, chat_model):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in _chats(12)))
    ps = load_prompts(cfg("task=jsonl", f"task.path={path}", "task.max_prompt_tokens=64").task, _tok(chat_model))
    assert len(ps.eval) == 3 and ps.eval[0].messages is not None
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"The film {i} was"}) + "\n" for i in range(12)))
    p = load_prompts(cfg("task=jsonl", f"task.path={plain}").task, _tok(chat_model)).eval[0]
    assert p.messages is None and _tok(chat_model).decode(p.token_ids) == p.text  # raw, as before


def test_start_up_errors_are_one_line_before_anything_is_loaded(tmp_path, monkeypatch):
    from datasets import Dataset

    Dataset.from_list([{"text": "x"}]).to_parquet(str(tmp_path / "t.parquet"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for over, msg in [((f"task.path={tmp_path / 'nope.parquet'}",), "does not exist"),
                      ((f"task.path={tmp_path / 't.parquet'}",), "neither a 'prompt' nor a 'messages' column"),
                      ((f"task.path={tmp_path / 't.parquet'}", "task.column=prompt"), "no column 'prompt'"),
                      (("task.path=someone/some-dataset",), "hub is offline"),
                      ((f"task.path={tmp_path / 't.parquet'}", "task.column=text", "task.chat_template=maybe"),
                       "auto, true or false")]:
        with pytest.raises(TaskError, match=msg):
            validate(cfg("task=hf", "policy=tiny", "task.max_prompt_tokens=64", *over))
    validate(cfg("task=hf", "policy=tiny", "task.max_prompt_tokens=64", f"task.path={tmp_path / 't.parquet'}",
                 "task.column=text"))
    with pytest.raises(TaskError, match="has no chat template"):  # the tiny tokenizer has none
        from rlaif.assets import tiny_dir

        load_prompts(_task(tmp_path / "t.parquet", "task.column=text", "task.chat_template=true"), _tok(tiny_dir()))


def test_a_run_on_a_chat_dataset_writes_conversational_rows_that_train_trl(tmp_path, chat_model):
    from datasets import Dataset, load_from_disk

    Dataset.from_list(_chats(48)).to_parquet(str(tmp_path / "chats.parquet"))
    run, bad = tmp_path / "run", tmp_path / "bad"
    base = tiny("task=hf", f"task.path={tmp_path / 'chats.parquet'}", f"policy.name_or_path={chat_model}",
                "task.max_prompt_tokens=64", "task.gold=imdb_sentiment",
                "budget.labels=8", "budget.labels_per_round=8")
    r = rlaif("run", *base, f"hydra.run.dir={run}", timeout=600, full_error=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rows = [json.loads(x) for x in (run / "preferences.jsonl").read_text().splitlines()]
    assert rows and all(isinstance(x["prompt"], list) and x["chosen"][0]["role"] == "assistant" for x in rows)
    tok = _tok(chat_model)
    ids = tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert rows[0]["prompt_input_ids"] == list(ids["input_ids"])  # TRL's rendering is what the policy saw
    e = rlaif("export", str(run), "--out", str(tmp_path / "export"))
    assert e.returncode == 0, e.stderr[-2000:]
    _dpo_step(load_from_disk(str(tmp_path / "export")), chat_model)
    # a missing column: one line, exit 2, before anything is loaded or bought
    r = rlaif("run", *base, "task.column=conversation", f"hydra.run.dir={bad}", full_error=False)
    assert r.returncode == 2 and "no column 'conversation'" in r.stderr and "Traceback" not in r.stderr
    assert not (bad / "ledger.sqlite").exists()


def _dpo_step(ds, model_dir) -> None:
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir="/tmp/rlaif-test-hf-dpo", max_steps=1, per_device_train_batch_size=4,
                     report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, max_length=96)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    out = trainer.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss)
