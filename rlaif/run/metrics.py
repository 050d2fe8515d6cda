"""What a run reports: one ``metrics.jsonl`` line per round and ``summary.json`` at the end.

Pure functions (values in, dict out; no I/O): the loop gathers the figures (budget, ledger totals,
timings, the evaluation) and these assemble them, so every key is spelled in one place.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlaif.types import Label, Outcome, Pair

# figures of the last round's evaluation that the summary repeats, where the round has them
FINAL_EVAL_KEYS = ("gold_winrate", "gold_winrate_ci", "gold_winrate_n", "gold_reward", "gold_reward_ci",
                   "reference_gold_reward", "oracle_winrate", "oracle_winrate_ci", "oracle_winrate_n",
                   "oracle_winrate_note", "oracle_eval_asked", "oracle_eval_judged",
                   "kl_to_reference", "kl_to_reference_ci", "kl_to_reference_n")


def eval_spend(totals: dict) -> dict:
    """What judging the evaluation cost so far (apart from the training labels' spend), from the
    ledger's totals of ``purpose="eval"``."""
    return {"dollars": round(totals["spent_dollars"], 8), "tokens": totals["spent_tokens"], "judgements": totals["paid"]}


def selected_summary(pairs: Sequence[Pair], labels: Sequence[Label | None]) -> dict:
    """Characteristics of what the arm bought: entropy, certainty, oracle vs implicit preference."""
    out: dict = {}
    for key in ("entropy", "certainty"):
        vals = [q.scores[key] for q in pairs if key in q.scores]
        if vals:
            out[f"mean_{key}"] = float(np.mean(vals))
    agree = [(lab.outcome is Outcome.A) == (q.scores["r_a"] > q.scores["r_b"])
             for q, lab in zip(pairs, labels)
             if lab is not None and lab.outcome.decisive and "r_a" in q.scores and q.scores["r_a"] != q.scores["r_b"]]
    if agree:
        out["oracle_implicit_agreement"] = float(np.mean(agree))
    return out


def round_metrics(r: int, *, pairs: Sequence[Pair], labels: Sequence[Label | None],
                  bought: Sequence[tuple[Pair, Label]], labels_so_far: int, decisive_so_far: int, spend: dict,
                  eval_spend: dict, acquisition: dict, label_s: float, train: dict, eval_s: float,
                  evaluation: dict) -> dict:
    """Round ``r``'s line of metrics.jsonl.

    ``pairs`` / ``labels``: what was acquired and what the judge said (None: not bought); ``bought``:
    the labelled ones; ``acquisition``: the arm's compute stats; ``train``: the learner's stats;
    ``evaluation``: the evaluator's figures ({} in a round not evaluated).
    """
    outcomes = [lab.outcome for _, lab in bought]
    return {
        "round": r,
        "labels": labels_so_far,
        "labels_round": len(bought),
        "decisive": decisive_so_far,
        "ties": sum(o is Outcome.TIE for o in outcomes),
        "invalid": sum(o is Outcome.INVALID for o in outcomes),
        "cached": sum(lab.cached for _, lab in bought),
        "spend": spend,
        "eval_spend": eval_spend,
        "cost_round": sum(lab.cost for _, lab in bought),
        "tokens_round": sum(lab.tokens_in + lab.tokens_out for _, lab in bought),
        "latency_mean": float(np.mean([lab.latency for _, lab in bought])) if bought else 0.0,
        "acquisition": acquisition,
        "timings": {"acquire_s": acquisition.get("seconds", 0.0), "label_s": label_s,
                    "train_s": train.get("seconds", 0.0), "eval_s": eval_s},
        "train": train,
        "selected": selected_summary(pairs, labels),
        **evaluation,
    }


def summary(*, run: dict, rounds: Sequence[dict], labels: int, decisive: int, stopped_by: str, spend: dict,
            eval_spend: dict, generations: float, acquire_seconds: float, reference_passes: int, ledger: dict,
            wall_seconds: float, session_seconds: float, resumed: bool) -> dict:
    """summary.json.

    ``run``: what ran (run_dir, arm, oracle, policy, generator, seed); ``rounds``: every round's
    metrics (the last one's evaluation is repeated); ``labels`` / ``decisive``: labels bought and
    decisive ones; ``generations`` / ``acquire_seconds``: the arm's compute over the whole run.
    """
    final = rounds[-1] if rounds else {}
    out = {
        **run,
        "rounds": len(rounds),
        "labels": labels,
        "decisive_labels": decisive,
        "stopped_by": stopped_by,
        "spend": spend,
        "eval_spend": eval_spend,
        "dollars_per_label": spend["dollars"] / labels if labels else None,
        "generations_per_label": generations / labels if labels else None,
        "acquisition_seconds_per_label": acquire_seconds / labels if labels else None,
        "reference_passes": reference_passes,
        "ledger": ledger,
        "wall_seconds": wall_seconds,  # the whole run's, earlier processes included
        "session_seconds": session_seconds,
        "resumed": resumed,
    }
    out.update({k: final[k] for k in FINAL_EVAL_KEYS if k in final})
    return out
