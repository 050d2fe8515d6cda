"""DPO on several processes (``trainer.num_processes=N``): real ``accelerate launch`` children, DDP
over gloo on the CPU, the tiny model, no mocks.

- 2 processes train what 1 process trains: the same per-step losses and the same final adapter, for
  the same global batch (8 pairs, batch_size 8: every step sees every pair whatever the sharding).
- A whole ``rlaif run`` with ``trainer.num_processes=2``: every label is bought once, by the rlaif
  process; the learner ranks load no oracle (nor any labelling module).
- Failures are one line: a learner that fails, ``rlaif run`` itself under a launcher, a missing
  accelerate config (before anything is bought); killing rlaif takes the learner ranks along.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import ROOT, cfg, rlaif, rlaif_env, tiny

pytestmark = pytest.mark.slow

# 1 vs 2 processes: float32 sums in another order (two half-batches averaged by gloo instead of one
# batch). Measured here: losses within ~1e-7, LoRA weights within ~4e-5 after 6 Adam steps at lr 5e-3
# (Adam divides by sqrt(v): a near-zero gradient's tiny difference moves a weight by up to ~lr);
# the adapter itself moves ~100x more than that.
LOSS_TOL = 1e-5
WEIGHT_TOL = 2e-4


def _prefs(policy, n: int = 8):
    """``n`` decisively labelled pairs of tiny-model token ids (distinct lengths, so padding matters)."""
    from rlaif.types import Completion, Label, Outcome, Pair, Prompt

    tok = policy.tokenizer
    out = []
    for i in range(n):
        text = f"Review {i}: this film was"
        p = Prompt(f"p{i}", text, tuple(tok(text)["input_ids"]))
        good, bad = " great and moving" + " fun" * (i % 3), " dull" + " and boring" * (i % 2 + 1)
        a = Completion(p, good, tuple(tok(good)["input_ids"]))
        b = Completion(p, bad, tuple(tok(bad)["input_ids"]))
        out.append((Pair(p, a, b, round=1), Label(outcome=Outcome.A if i % 4 else Outcome.B, raw="Preferred")))
    return out


def _train(tmp_path: Path, num_processes: int, mode: str, rounds: int = 2, *extra: str):
    """Train ``rounds`` rounds of DPO on the same 8 pairs -> (stats per round, the trained tensors: the
    LoRA ones, or all of them for full fine-tuning)."""
    import torch

    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer
    from rlaif.trainer.dpo import DPOLearner

    torch.set_num_threads(2)
    c = cfg(*tiny("trainer.learning_rate=5e-3", "trainer.epochs=3", f"trainer.mode={mode}",
                  f"trainer.num_processes={num_processes}", *extra))
    policy = Policy(c.policy, c.trainer, seed=0)
    learner = DPOLearner(c.trainer, policy, ReferenceScorer(policy), seed=0,
                         output_dir=str(tmp_path / f"n{num_processes}" / "state" / "trainer"))
    prefs = _prefs(policy)
    stats = [learner.train(prefs, r) for r in range(1, rounds + 1)]
    trained = {k: v.detach().clone() for k, v in policy.model.named_parameters() if "lora_" in k or not policy.lora}
    return stats, trained, learner


def _step_losses(learner_dir: Path) -> list[float]:
    hist = json.loads((learner_dir / "result.json").read_text())["log_history"]
    return [h["loss"] for h in hist if "loss" in h]


def test_two_processes_train_what_one_process_trains(tmp_path):
    one, w1, _ = _train(tmp_path, 1, "continue")
    two, w2, learner = _train(tmp_path, 2, "continue")
    for a, b in zip(one, two):
        assert a["steps"] == b["steps"] == 3  # 8 pairs, global batch 8, 3 epochs
        assert abs(a["loss"] - b["loss"]) < LOSS_TOL, (a, b)
        assert a["reward_accuracy"] == pytest.approx(b["reward_accuracy"], abs=1e-6)
        assert a["reward_margin"] == pytest.approx(b["reward_margin"], abs=1e-4)
    assert one[-1]["loss"] < one[0]["loss"]  # it trained: round 2 continues round 1's adapter
    assert w1.keys() == w2.keys() and w1
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    moved = max(float(w1[k].abs().max()) for k in w1 if "lora_B" in k)  # B starts at 0
    print(f"\nloss |1 proc - 2 procs| per round: {[abs(a['loss'] - b['loss']) for a, b in zip(one, two)]}, "
          f"max LoRA weight difference {worst:.2e}, largest LoRA B weight {moved:.2e}")
    assert worst < WEIGHT_TOL, worst
    assert moved > 50 * WEIGHT_TOL  # the adapter moved far more than the two runs differ
    job = learner.work_dir / "round_0002.learner"
    assert len(_step_losses(job)) == 3
    ranks = [json.loads((job / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert not (job / "start").exists() and not (job / "out").exists()  # the weights came back, copies gone


def test_full_fine_tuning_from_the_reference(tmp_path):
    """trainer.lora=false, mode=reset: no starting weights travel (each rank loads the reference
    itself), the whole model comes back."""
    one, w1, _ = _train(tmp_path, 1, "reset", 1, "trainer.lora=false")
    two, w2, learner = _train(tmp_path, 2, "reset", 1, "trainer.lora=false")
    assert [s["steps"] for s in two] == [3]
    assert abs(one[0]["loss"] - two[0]["loss"]) < LOSS_TOL, (one, two)
    assert not json.loads((learner.work_dir / "round_0001.learner" / "job.json").read_text())["start"]
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"\nfull fine-tuning: loss |1 proc - 2 procs| {abs(one[0]['loss'] - two[0]['loss']):.2e}, "
          f"max weight difference {worst:.2e}")
    assert worst < WEIGHT_TOL, worst


JUDGE_FREE = {"rlaif.oracle.base", "rlaif.oracle.parsing"}


def _ledger_train_rows(run: Path) -> list[tuple]:
    with sqlite3.connect(run / "ledger.sqlite") as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(labels)")]
        key = "pair_id" if "pair_id" in cols else cols[0]
        return db.execute(f"SELECT {key} FROM labels WHERE purpose='train'").fetchall()


def test_run_on_two_processes_buys_each_label_once_in_the_rlaif_process(tmp_path):
    run = tmp_path / "run"
    r = rlaif("run", *tiny("oracle=simulated", "budget.labels=16", "budget.labels_per_round=8",
                           "trainer.num_processes=2"), f"hydra.run.dir={run}", timeout=400, full_error=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["labels"] for m in metrics] == [8, 16]
    assert all(m["train"]["steps"] >= 1 and m["train"]["loss"] is not None for m in metrics)
    rows = _ledger_train_rows(run)
    assert len(rows) == 16 and len(set(rows)) == 16  # each label bought once
    for rnd in (1, 2):
        job = run / "state" / f"round_{rnd:04d}.learner"
        ranks = [json.loads(p.read_text()) for p in sorted((job / "ranks").glob("*.json"))]
        assert len(ranks) == 2 and all(x["world"] == 2 for x in ranks)
        for x in ranks:  # the learner ranks load no judge, labeller, ledger or generator (only the oracle's
            # abstract base and answer parsing come along with the config's types)
            assert not [m for m in x["rlaif_modules"] if m.startswith(("rlaif.oracle.", "rlaif.labels.labeler",
                        "rlaif.labels.ledger", "rlaif.generator.")) and m not in JUDGE_FREE], x["rlaif_modules"]
        assert os.getpid() not in {x["pid"] for x in ranks}
        assert (run / "state" / f"round_{rnd:04d}.model" / "adapter_model.safetensors").exists()


def test_a_failed_learner_is_one_line(tmp_path):
    """The ranks cannot load the policy: LearnerError, one line naming the round, the exit code, the
    child's own error, its log and how to go on."""
    from datasets import Dataset

    from rlaif.trainer import launch
    from rlaif.trainer.dpo_config import DPOConfig
    from rlaif.trainer.launch import LearnerError

    class Broken:  # a policy object whose saved start cannot be loaded by the ranks
        lora, cfg = True, {"name_or_path": "/nonexistent", "dtype": "float32", "device": "cpu"}

        def save_trained(self, out):
            Path(out).mkdir(parents=True)

    job = tmp_path / "round_0003.learner"
    with pytest.raises(LearnerError) as e:
        launch.fit_elsewhere(Broken(), DPOConfig(num_processes=2, batch_size=8),
                             Dataset.from_dict({"prompt_ids": [[1]]}), seed=0, round_=3, job_dir=job)
    msg = str(e.value)
    assert "\n" not in msg and "round 3" in msg and "exit code" in msg and "learner.log" in msg and "resume" in msg
    assert "/nonexistent" in msg  # the child's own last error line


def test_rlaif_run_under_a_launcher_is_refused_in_one_line(tmp_path):
    r = rlaif("run", *tiny("trainer.num_processes=1"), f"hydra.run.dir={tmp_path / 'run'}",
              env=rlaif_env(full_error=False, WORLD_SIZE="2", RANK="0"), timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("rlaif: error:")]
    assert len(line) == 1 and "trainer.num_processes=2" in line[0] and "WORLD_SIZE=2" in line[0]
    assert not (tmp_path / "run" / "ledger.sqlite").exists()


def test_a_missing_accelerate_config_stops_the_start(tmp_path):
    r = rlaif("run", *tiny("trainer.num_processes=2", "trainer.accelerate_config=conf/accelerate/nope.yaml"),
              f"hydra.run.dir={tmp_path / 'run'}", env=rlaif_env(full_error=False), timeout=120)
    assert r.returncode == 2 and "trainer.accelerate_config" in r.stderr and "nope.yaml" in r.stderr
    assert not (tmp_path / "run" / "ledger.sqlite").exists()
    for name in ("ddp", "fsdp", "deepspeed_zero3"):  # the ready ones are found from anywhere
        c = cfg(*tiny("trainer.num_processes=2", f"trainer.accelerate_config=conf/accelerate/{name}.yaml"))
        from rlaif.loop import validate

        validate(c)
    with pytest.raises(Exception, match="multiple of trainer.num_processes"):
        from rlaif.loop import validate

        validate(cfg(*tiny("trainer.num_processes=3")))


KILLED = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from helpers import cfg, tiny
    from test_trainer_distributed import _prefs
    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer
    from rlaif.trainer.dpo import DPOLearner
    c = cfg(*tiny("trainer.num_processes=2", "trainer.epochs=500"))
    policy = Policy(c.policy, c.trainer, seed=0)
    DPOLearner(c.trainer, policy, ReferenceScorer(policy), output_dir=sys.argv[1]).train(_prefs(policy), 1)
""")


def test_killing_rlaif_stops_the_learner_ranks(tmp_path):
    """SIGKILL to the process that launched the learner: its orphan guard stops the ranks."""
    import psutil

    out = tmp_path / "state" / "trainer"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(out), str(ROOT / "tests")], cwd=ROOT,
                            env=rlaif_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ranks_dir = tmp_path / "state" / "round_0001.learner" / "ranks"
    deadline = time.monotonic() + 120
    while len(list(ranks_dir.glob("*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the learner ranks never started"
        time.sleep(0.5)
    pids = [json.loads(p.read_text())["pid"] for p in ranks_dir.glob("*.json")]
    assert all(psutil.pid_exists(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.5)
    for p in alive:  # don't leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive, "learner ranks survived their parent"
