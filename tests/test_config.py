"""Configuration: every group composes; bad input fails before any work, naming the problem."""

import json

import pytest
from omegaconf import OmegaConf

from rlaif import registry
from rlaif.labels.budget import BudgetError
from rlaif.loop import validate
from rlaif.tasks import TaskError

from helpers import ROOT, cfg, rlaif


def test_default_config_composes_and_validates():
    c = cfg()
    assert c.policy.name_or_path == "smollm2" and c.budget.labels > 0
    validate(c)
    assert OmegaConf.select(c, "acquisition._target_").endswith("RandomAcquisition")


@pytest.mark.parametrize("group", ["acquisition", "oracle", "generator", "trainer", "budget", "task", "policy"])
def test_every_option_of_every_group_composes(group):
    for f in sorted((ROOT / "conf" / group).glob("*.yaml")):
        c = cfg(f"{group}={f.stem}")
        for g in ("generator", "acquisition", "oracle"):
            registry.check(c[g], g)


def test_unknown_top_level_key_fails_naming_it():
    with pytest.raises(Exception, match="not_a_key"):
        cfg("budget.not_a_key=3")


def test_wrong_type_fails_naming_key():
    with pytest.raises(Exception, match="labels"):
        cfg("budget.labels=lots")


def test_unknown_key_in_swappable_group_fails_naming_it():
    c = cfg("+acquisition.not_a_knob=3")
    with pytest.raises(registry.ConfigError, match="not_a_knob"):
        validate(c)


def test_unknown_group_option_fails():
    with pytest.raises(Exception, match="no_such_judge"):
        cfg("oracle=no_such_judge")


@pytest.mark.parametrize("override", ["budget.labels=0", "budget.labels=-5", "budget.dollars=0",
                                      "budget.labels_per_round=0"])
def test_non_positive_budget_is_refused(override):
    with pytest.raises(BudgetError):
        validate(cfg(override))


def test_no_budget_limit_is_refused():
    with pytest.raises(BudgetError, match="at least one"):
        validate(cfg("budget.labels=null"))


def test_missing_prompt_file_is_refused(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        validate(cfg("task=jsonl", f"task.path={tmp_path}/nope.jsonl"))


def test_policy_path_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate(cfg(f"policy.name_or_path={tmp_path}/no_model"))


def test_prompt_files(tmp_path):
    from transformers import AutoTokenizer

    from rlaif.assets import tiny_dir
    from rlaif.tasks import load_prompts

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TaskError, match="no prompts"):
        load_prompts(cfg("task=jsonl", f"task.path={empty}").task, tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(TaskError, match="bad.jsonl:2"):
        load_prompts(cfg("task=jsonl", f"task.path={bad}").task, tok)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"Tell me about film {i}"}) + "\n" for i in range(20)))
    ps = load_prompts(cfg("task=jsonl", f"task.path={good}").task, tok)
    assert ps.train and ps.eval and not ({p.id for p in ps.train} & {p.id for p in ps.eval})


def test_imdb_prompts_are_disjoint_and_cut_to_8_16_tokens():
    from transformers import AutoTokenizer

    from rlaif.assets import tiny_dir
    from rlaif.tasks import load_prompts

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    ps = load_prompts(cfg("task.train_prompts=200", "task.eval_prompts=50").task, tok)
    assert len(ps.train) == 200 and len(ps.eval) == 50
    assert {p.text for p in ps.train}.isdisjoint({p.text for p in ps.eval})
    assert all(8 <= len(p.token_ids) <= 16 for p in ps.train + ps.eval)


def test_cli_reports_bad_input_in_one_line_before_work(tmp_path):
    r = rlaif("run", "budget.labels=0", f"hydra.run.dir={tmp_path}/run", timeout=120, full_error=False)
    assert r.returncode == 2 and "budget.labels must be a positive" in r.stderr
    assert not (tmp_path / "run" / "ledger.sqlite").exists()  # nothing was started
    r = rlaif("run", "+acquisition.bogus=1", f"hydra.run.dir={tmp_path}/run2", timeout=120, full_error=False)
    assert r.returncode == 2 and "bogus" in r.stderr


@pytest.mark.parametrize("override,key", [
    ("trainer.beta=0", "trainer.beta"), ("trainer.beta=-0.1", "trainer.beta"),
    ("oracle.concurrency=0", "oracle.concurrency"), ("oracle.concurrency=-2", "oracle.concurrency"),
    ("eval.prompts=0", "eval.prompts"),
    ("trainer.report_to=not_a_reporter", "trainer.report_to"),
    ("+trainer.betta=0.1", "trainer.betta"), ("+budget.labelz=5", "budget.labelz"), ("+task.pth=x", "task.pth"),
    ("+not_a_key=1", "not_a_key"),
])
def test_out_of_range_and_unknown_values_are_refused_at_start_up(override, key):
    with pytest.raises(registry.ConfigError, match=key.replace(".", r"\.")):
        validate(cfg("policy=tiny", override))


def test_a_report_to_package_that_is_not_installed_is_refused_at_start_up(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(registry.ConfigError, match="report_to=wandb: the package 'wandb' is not installed"):
        validate(cfg("policy=tiny", "trainer.report_to=wandb"))
    validate(cfg("policy=tiny", "trainer.report_to=none"))


def test_a_key_in_api_key_env_is_refused_without_echoing_it():
    key = "sk-live-0123456789abcdefABCDEF"
    with pytest.raises(registry.ConfigError, match="oracle.api_key_env must name an environment variable") as e:
        validate(cfg("policy=tiny", "oracle=openai", f"oracle.api_key_env={key}"))
    assert key[:8] not in str(e.value)
    with pytest.raises(registry.ConfigError, match="oracle.api_key: secrets are not accepted"):
        validate(cfg("policy=tiny", "oracle=openai", f"+oracle.api_key={key}"))


def test_non_utf8_prompt_file_and_too_long_prompts_are_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(TaskError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        validate(cfg("policy=tiny", "task=jsonl", f"task.path={bad}"))
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "hello"}\n')
    with pytest.raises(TaskError, match="exceed the policy's context of 128 tokens"):
        validate(cfg("policy=tiny", "task=jsonl", f"task.path={good}"))  # 256 + 64 > 128
    validate(cfg("policy=tiny", "task=jsonl", f"task.path={good}", "task.max_prompt_tokens=64"))
