"""The config fingerprint: one module, one check; runs started before the schemas resume after."""

import json

import pytest

from rlaif.config import RunConfig
from rlaif.errors import RlaifError, user_errors
from rlaif.labels.ledger import Ledger
from rlaif.run.fingerprint import ConfigChangedError, diff_fingerprints, label_fingerprint, refuse_changed
from rlaif.run.state import RunState

from helpers import ROOT, cfg

OLD = json.loads((ROOT / "tests" / "data" / "fingerprints_6a8fc87.json").read_text())["runs"]


@pytest.mark.parametrize("run", OLD, ids=lambda r: " ".join(r["overrides"]) or "default")
def test_a_fingerprint_saved_by_the_old_code_compares_equal(run):
    new = label_fingerprint(cfg(*run["overrides"]))
    assert diff_fingerprints(run["fingerprint"], new) == []
    # the keys the old code left out are still out; the new ones are schema defaults the run used
    assert set(new) >= set(run["fingerprint"]) - new.kept
    assert all(new[k] == new.defaults[k] for k in set(new) - set(run["fingerprint"]))


def test_an_old_fingerprint_still_refuses_a_changed_key_and_allows_a_neutral_one():
    old = next(r["fingerprint"] for r in OLD if r["overrides"] == ["oracle=openai"])
    with pytest.raises(ConfigChangedError, match=r'refusing to resume RUN: .*\n  oracle.model: "gpt-4o-mini" -> "x"'):
        refuse_changed("RUN", old, label_fingerprint(cfg("oracle=openai", "oracle.model=x")))
    # a key the old config did not spell out counts as its default: changing it is refused too
    assert "oracle.name" not in old
    with pytest.raises(ConfigChangedError, match=r'\n  oracle.name: "" -> "judge2"'):
        refuse_changed("RUN", old, label_fingerprint(cfg("oracle=openai", "oracle.name=judge2")))
    refuse_changed("RUN", old, label_fingerprint(cfg("oracle=openai", "oracle.concurrency=2", "budget.labels=9",
                                                     "oracle.price_input_per_mtok=1", "eval.prompts=3")))


def test_neutral_keys_come_from_field_metadata():
    fp = label_fingerprint(cfg("oracle=openai"))
    assert {"oracle.concurrency", "oracle.backoff_max_s", "budget.labels", "threads", "eval.prompts"} <= fp.kept
    assert "oracle.model" in fp and "budget.labels_per_round" in fp and "trainer.mode" in fp
    assert not any(k.startswith(("eval.", "oracle.price")) for k in fp)


def test_run_state_and_ledger_refuse_with_one_message(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    RunState(tmp_path).check_config(label_fingerprint(cfg()), ledger=ledger)
    changed = label_fingerprint(cfg("seed=1"))
    with pytest.raises(ConfigChangedError, match=rf"refusing to resume {tmp_path}: its label-changing config"):
        RunState(tmp_path).check_config(changed, ledger=ledger)
    with pytest.raises(ConfigChangedError, match=r"refusing to resume the run of the ledger .*: its label-changing"):
        ledger.check_config(changed)
    ledger.close()


def test_every_user_error_derives_from_one_base():
    from rlaif.labels.budget import BudgetError
    from rlaif.labels.ledger import LedgerError
    from rlaif.labels.reparse import ReparseError
    from rlaif.oracle.base import OracleError
    from rlaif.registry import ConfigError
    from rlaif.run.startup import RunDirError
    from rlaif.run.state import RunStateError
    from rlaif.tasks import TaskError

    for e in (ConfigError, BudgetError, LedgerError, ConfigChangedError, RunStateError, ReparseError, TaskError,
              RunDirError, OracleError):
        assert issubclass(e, RlaifError) and issubclass(e, user_errors())
    assert issubclass(ConfigError, ValueError) and issubclass(OracleError, RuntimeError)  # as before


def test_every_config_field_of_the_run_has_help():
    import dataclasses

    for schema in [RunConfig] + [f.default_factory for f in dataclasses.fields(RunConfig)
                                 if f.default_factory is not dataclasses.MISSING]:
        missing = [f.name for f in dataclasses.fields(schema) if not f.metadata.get("help")]
        assert not missing, f"{schema.__name__}: {missing}"
