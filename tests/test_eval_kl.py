"""The evaluation's KL(pi || pi_ref) estimate (``eval.kl_prompts``): y ~ pi at temperature 1, the mean
log pi(y|x) - log pi_ref(y|x) with a 95% interval, in metrics.jsonl, the summary and the trackers."""
import json

import pytest

from helpers import rlaif, tiny

pytestmark = pytest.mark.slow


def _run(tmp_path, *overrides):
    d = tmp_path / "run"
    r = rlaif("run", *tiny(*overrides), f"hydra.run.dir={d}", full_error=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()], \
        json.loads((d / "summary.json").read_text())


def test_kl_is_zero_when_the_policy_did_not_move_and_positive_once_it_did(tmp_path):
    # learning rate 0: the LoRA adapter stays zero, so the policy is the reference and every
    # per-sequence log-ratio is 0 up to the generator's and the scorer's float noise
    still, _ = _run(tmp_path / "a", "eval.kl_prompts=8", "trainer.learning_rate=0.0")
    for m in still:
        assert m["kl_to_reference_n"] == 8
        assert abs(m["kl_to_reference"]) < 1e-3
    moved, summary = _run(tmp_path / "b", "eval.kl_prompts=8", "trainer.learning_rate=0.05")
    last = moved[-1]
    lo, hi = last["kl_to_reference_ci"]
    assert lo <= last["kl_to_reference"] <= hi and last["kl_to_reference_n"] == 8
    assert last["kl_to_reference"] > 1e-3  # trained weights: the samples are likelier under pi than pi_ref
    assert summary["kl_to_reference"] == last["kl_to_reference"]


def test_off_by_default(tmp_path):
    metrics, _ = _run(tmp_path, "budget.labels=8")
    assert all("kl_to_reference" not in m for m in metrics)
