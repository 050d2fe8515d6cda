"""Long work shows progress: bars on a terminal, plain periodic log lines in a log (no carriage
returns), and one readable line per DPO round."""

from __future__ import annotations

import logging
import re

import pytest

from helpers import ROOT, rlaif, rlaif_env, tiny

from rlaif.logger import progress


def test_a_run_logged_to_a_file_has_no_bar_spam_and_one_line_per_dpo_round(tmp_path):
    run = tmp_path / "run"
    # stdout and stderr are pipes (not a terminal); a progress line at every update
    r = rlaif("run", *tiny("budget.labels=16", "budget.labels_per_round=8"), f"hydra.run.dir={run}",
              env=rlaif_env(True, RLAIF_PROGRESS_SECONDS="0"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = r.stdout + r.stderr
    assert "Loading weights" not in out  # transformers' bars are off
    dpo = re.findall(r"round (\d): DPO (\d+) step\(s\) on (\d+) pairs in [\d.]+s: loss [\d.]+, reward accuracy "
                     r"[\d.]+, margin -?[\d.]+", out)
    assert [d[0] for d in dpo] == ["1", "2"], out[-4000:]
    # labelling progress as log lines: pairs answered of the call, labels of the budget, $ and invalid answers
    assert re.search(r"labelling \(train\): 8/8 pair \(100%\), \d+/16 labels, \$0\.0000, 0 invalid", out), out[-4000:]
    assert re.search(r"evaluation of round 1: \d/\d stage", out)
    if "quiet_trainer" not in (ROOT / "rlaif" / "trainer" / "dpo.py").read_text():
        pytest.xfail("TRL's own bar and raw dicts go once rlaif/trainer/dpo.py calls "
                     "rlaif.logger.trainer_progress.quiet_trainer(trainer)")
    assert "\r" not in out and "it/s]" not in out  # no progress bar redrawn in the log
    assert "{'loss'" not in out and "'train_runtime'" not in out  # no raw TRL dicts


def test_log_lines_are_periodic_and_bars_only_on_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(progress, "is_tty", lambda: False)
    caplog.set_level(logging.INFO, logger="rlaif.progress")
    quiet = progress.progress(10, "work", "pair")  # every 30 s: nothing for a short job
    quiet.update(10)
    quiet.close()
    assert not caplog.records
    monkeypatch.setenv("RLAIF_PROGRESS_SECONDS", "0")
    bar = progress.progress(4, "work", "pair")
    bar.set_postfix_str("3/8 labels, $0.0100, 1 invalid")
    bar.update(3)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("work: 3/4 pair (75%), 3/8 labels, $0.0100, 1 invalid,") and len(lines) == 1
    assert not progress.progress(4, "off", enabled=False).every < float("inf")
    monkeypatch.setattr(progress, "is_tty", lambda: True)
    from tqdm import tqdm

    assert isinstance(progress.progress(4, "tty"), tqdm)


def test_the_dpo_line():
    line = progress.dpo_line({"steps": 2, "pairs": 16, "seconds": 1.25, "loss": 0.69314, "reward_accuracy": 0.625,
                              "reward_margin": 0.0042, "ref_logratio": 0.0123})
    assert line == ("DPO 2 step(s) on 16 pairs in 1.2s: loss 0.6931, reward accuracy 0.62, margin 0.0042, "
                    "log pi/pi_ref on the training pairs 0.0123")
    assert progress.dpo_line({"steps": 0, "skipped": "no decisive labels"}) == "DPO skipped (no decisive labels)"
