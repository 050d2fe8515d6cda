"""Portable artefacts: the saved adapter names its base model by hub id (not this machine's cache path)
and the run's ``model/`` has a filled model card (arm, judge, labels, win-rate with its interval, the
command)."""

from __future__ import annotations

import json

from helpers import rlaif, tiny
from rlaif.assets import hub_id

HUB = "rlaif-tests/tiny-gpt2"


def test_hub_id_of_the_built_in_policy_and_others():
    assert hub_id("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("tiny") is None  # built on this machine: no hub id, the local path stays
    assert hub_id("org/model") == "org/model"
    assert hub_id("tiny", "org/mine") == "org/mine"  # policy.hub_id wins


def test_final_adapter_names_the_hub_id_and_has_a_model_card(tmp_path):
    run = tmp_path / "run"
    r = rlaif("run", *tiny("budget.labels=8", "budget.labels_per_round=8", f"policy.hub_id={HUB}"),
              f"hydra.run.dir={run}", timeout=600, full_error=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    model = run / "model"
    assert json.loads((model / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB
    card = (model / "README.md").read_text()
    assert f"base_model: {HUB}" in card and "/.cache/" not in card
    for field in ("| arm | random |", "| judge | reward_model:imdb_sentiment |", "| labels | 8 bought",
                  "| gold win-rate vs reference | ", "(n=12)", "rlaif run ", f"policy.hub_id={HUB}",
                  "AutoPeftModelForCausalLM"):
        assert field in card, (field, card)
    summary = json.loads((run / "summary.json").read_text())
    lo, hi = summary["gold_winrate_ci"]
    assert f"{100 * summary['gold_winrate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" in card
    # the adapter still loads onto the local base model (PEFT reads the renamed config)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlaif.assets import tiny_dir

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir()), str(model))
