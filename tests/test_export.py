"""``rlaif export``: the preferences of runs of three arms (and two judges: one with P(a), one without)
combine into one ``datasets`` dataset in one fixed schema, with a dataset card, and train TRL's
DPOTrainer for a step as they are (real datasets, real TRL, the tiny model)."""

from __future__ import annotations

import json
import math

import pytest

from helpers import rlaif, tiny

ARMS = {  # arm -> its run's overrides: three arms, a judge without P(a) (reward_model) and one with it
    "random": ["acquisition=random"],
    "certainty": ["acquisition=certainty", "acquisition.f=2", "oracle=simulated"],
    "entropy": ["acquisition=entropy", "acquisition.n_samples=2", "acquisition.k=2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for arm, overrides in ARMS.items():
        d = base / f"{arm}-s0"
        r = rlaif("run", *tiny("budget.labels=8", "budget.labels_per_round=8", *overrides), f"hydra.run.dir={d}",
                  timeout=600, full_error=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        out[arm] = d
    return out


def test_preferences_of_different_arms_and_judges_load_together_with_datasets(runs):
    from datasets import load_dataset

    files = [str(d / "preferences.jsonl") for d in runs.values()]
    ds = load_dataset("json", data_files=files, split="train")  # failed before: scores / p_a typed per arm
    assert ds.features["p_a"].dtype == "float64" and ds.features["scores"].dtype == "string"
    rows = [json.loads(x) for d in runs.values() for x in (d / "preferences.jsonl").read_text().splitlines()]
    assert len({tuple(r) for r in rows}) == 1  # the same keys, in the same order, for every arm and judge
    assert any(math.isnan(r["p_a"]) for r in rows) and any(not math.isnan(r["p_a"]) for r in rows)
    assert {k for r in rows for k in json.loads(r["scores"])} >= {"acq_random", "certainty", "entropy"}


def test_export_of_three_arms_is_one_dataset_with_a_card_and_trains_trl_dpo(runs, tmp_path):
    from datasets import load_dataset, load_from_disk

    out = tmp_path / "export"
    r = rlaif("export", *map(str, runs.values()), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    ds = load_from_disk(str(out))
    assert sorted(set(ds["arm"])) == ["certainty", "entropy", "random"] and set(ds["seed"]) == {0}
    n = sum(len((d / "preferences.jsonl").read_text().splitlines()) for d in runs.values())
    assert len(ds) == n
    assert {"prompt", "chosen", "rejected", "prompt_input_ids", "chosen_input_ids", "rejected_input_ids",
            "scores", "p_a", "judge", "cost", "run"} <= set(ds.column_names)
    parquet = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert parquet["pair_id"] == ds["pair_id"]
    card = (out / "README.md").read_text()
    for arm, d in runs.items():
        assert f"| {d.name} | {arm} | 0 |" in card
    assert "reward_model:imdb_sentiment" in card and "simulated" in card and "rlaif run " in card
    assert "labels bought" in card and "judge cost" in card and "template hash" in card
    _dpo_step(ds)


def _dpo_step(ds) -> None:
    """One step of TRL's own DPOTrainer on the exported rows, as they are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlaif.assets import tiny_dir

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    model = AutoModelForCausalLM.from_pretrained(tiny_dir())
    args = DPOConfig(output_dir="/tmp/rlaif-test-export-dpo", max_steps=1, per_device_train_batch_size=4,
                     report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, max_length=64)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    out = trainer.train()
    assert out.global_step == 1 and math.isfinite(out.training_loss)


def test_export_errors_are_one_line(runs, tmp_path):
    out = tmp_path / "e"
    r = rlaif("export", str(runs["random"]), "--out", str(out), "--push-to-hub", "someone/prefs",
              env=None)
    assert r.returncode == 2 and "--push-to-hub someone/prefs" in r.stderr and "Traceback" not in r.stderr
    assert (out / "README.md").exists()  # written locally before the push was tried
    again = rlaif("export", str(runs["random"]), "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    missing = rlaif("export", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
