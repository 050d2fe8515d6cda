"""``rlaif run resume=RUN_DIR`` alone: the run's saved overrides, its own directory, its own log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from rlaif.cli.resume import ResumeError, is_kept, rewrite

from helpers import ROOT, cfg, rlaif_env, tiny
from helpers import rlaif as _rlaif

SAVED = tiny("oracle=simulated", "budget.labels=16", "budget.labels_per_round=8", "eval.prompts=8",
             "task.gold=null", "threads=1")


def rlaif(*args: str, cwd: Path, timeout: float = 300):
    """``rlaif *args`` in ``cwd`` (away from the checkout: the package found through PYTHONPATH)."""
    return _rlaif(*args, cwd=cwd, timeout=timeout, env=rlaif_env(False, PYTHONPATH=str(ROOT)))


def _fake_run(d: Path, overrides: list[str]) -> Path:
    """A run directory's record as ``rlaif run`` leaves it (state, config.yaml, .hydra/)."""
    (d / "state").mkdir(parents=True)
    (d / "state" / "state.json").write_text(json.dumps({"version": 1}))
    plain = OmegaConf.to_container(cfg(*overrides), resolve=True)
    (d / "config.yaml").write_text(yaml.safe_dump(plain))
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {
        "oracle": "simulated", "policy": "tiny", "generator": "hf", "acquisition": "random"}}}}))
    return d


def test_rewrite_reloads_the_saved_overrides_and_runs_in_the_run_dir(tmp_path):
    run = _fake_run(tmp_path / "run", SAVED)
    args = rewrite([f"resume={run}", "budget.labels=24", "oracle.concurrency=2", "eval.prompts=4"])
    where = f"hydra.run.dir='{run.resolve()}'"
    assert args[-1] == where and f"resume={run.resolve()}" in args
    assert "budget.labels=24" in args and "budget.labels=16" not in args  # replaced, once
    assert [a for a in args if a.startswith("policy=")] == ["policy=tiny"]
    assert "oracle.concurrency=2" in args and "eval.prompts=4" in args
    # repeating the run's own values is fine, the text or the value
    assert "policy=tiny" in rewrite([f"resume={run}", "policy=tiny", "seed=0", "oracle=simulated"])
    # flags stay in front
    assert rewrite(["--cfg", "job", f"resume={run}"])[:2] == ["--cfg", "job"]
    # not a resume, or not a run directory: unchanged (the start-up checks report a bad path)
    assert rewrite(["seed=1"]) == ["seed=1"]
    with pytest.raises(ResumeError, match="no such directory"):
        rewrite([f"resume={tmp_path / 'nope'}"])
    with pytest.raises(ResumeError, match="not an rlaif run directory"):
        rewrite([f"resume={tmp_path}"])
    # a run too old to have saved its overrides: it still runs in its own directory
    (run / ".hydra" / "overrides.yaml").unlink()
    assert rewrite([f"resume={run}", "seed=0", "hydra.run.dir=x"]) == [f"resume={run}", "seed=0", where]


@pytest.mark.parametrize("override", ["seed=1", "oracle.flip_rate=0.3", "oracle=openai", "acquisition=hybrid",
                                      "budget.labels_per_round=4", "task.max_new_tokens=6",
                                      f"hydra.run.dir=elsewhere"])
def test_a_label_changing_override_is_refused_in_one_line(tmp_path, override):
    run = _fake_run(tmp_path / "run", SAVED)
    with pytest.raises(ResumeError) as e:
        rewrite([f"resume={run}", override])
    key = override.split("=")[0]
    if key == "seed":
        assert "seed: 0 -> 1" in str(e.value)
    assert "\n" not in str(e.value) and f"refusing to resume {run}" in str(e.value) and key in str(e.value)


def test_which_keys_may_change(tmp_path):
    saved = OmegaConf.to_container(cfg(*SAVED), resolve=True)
    for key in ("budget.labels", "budget.dollars", "budget.max_rounds", "eval.prompts", "eval.with_oracle",
                "threads", "oracle.concurrency", "ledger_cache", "save_model", "hydra.verbose"):
        assert is_kept(key, saved), key
    for key in ("seed", "oracle.flip_rate", "oracle", "policy.name_or_path", "budget.labels_per_round",
                "trainer.beta", "hydra.run.dir", "hydra.sweep.dir", "nosuch.key"):
        assert not is_kept(key, saved), key


def test_resume_refuses_a_sweep(tmp_path):
    run = _fake_run(tmp_path / "run", SAVED)
    with pytest.raises(ResumeError, match="cannot be combined with -m"):
        rewrite(["-m", f"resume={run}", "seed=0"])
    r = rlaif("run", "-m", f"resume={run}", "eval.prompts=4,8", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "-m" in r.stderr
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_resume_by_directory_alone(tmp_path):
    run, cwd = tmp_path / "run", tmp_path / "elsewhere"
    cwd.mkdir()
    first = rlaif("run", *SAVED, f"hydra.run.dir={run}", cwd=cwd, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["labels"] == 16
    log_before = (run / "run.log").read_text()

    # a label-changing override: one line, nothing written
    refused = rlaif("run", f"resume={run}", "seed=3", cwd=cwd)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "seed" in refused.stderr and "refusing to resume" in refused.stderr

    # the directory alone, with a larger label budget (budget.labels changes no label)
    again = rlaif("run", f"resume={run}", "budget.labels=24", cwd=cwd, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == 24 and summary["rounds"] == 3
    assert list(cwd.iterdir()) == []  # no outputs/ (or anything else) outside the run directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "run"]
    log = (run / "run.log").read_text()
    assert log.startswith(log_before) and len(log) > len(log_before)  # appended to the run's own log
    saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert "policy=tiny" in saved and "budget.labels=24" in saved
