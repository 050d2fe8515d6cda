"""The Active Preference Learning loop (Muldrew et al., 2024), as in the paper:

    for each round, until the label budget is spent:
        1. acquire candidate pairs with the policy trained in the previous round
        2. ask the oracle for a preference on each selected pair
        3. train DPO on all pairs labelled so far (reset to the reference first), or continue
        4. evaluate: win-rate against the reference on held-out prompts

Everything is checkpointed in the run directory so a killed run resumes where it stopped:
acquired pairs are saved before labelling, every paid label is in the ledger, every trained
adapter is saved before the round is marked trained.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from rlaif import registry
from rlaif.acquisition.base import AcquisitionContext
from rlaif.labels.budget import Budget, BudgetError, run_budgets
from rlaif.run.evaluation import winrate_text
from rlaif.labels.judge_health import JudgeHealth
from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import Ledger
from rlaif.run.state import RunState, atomic_write_text, label_fingerprint, round_seed
from rlaif.types import Completion, Outcome, Prompt, preference_row

log = logging.getLogger("rlaif")


@dataclass
class Parts:
    """Everything the loop is wired from (built by :func:`build`)."""

    cfg: object
    run_dir: Path
    budget: Budget
    oracle: object
    acquisition: object
    ledger: Ledger
    state: RunState
    labeler: Labeler
    resumed: bool = False
    policy: object = None
    prompts: object = None
    reference: object = None
    generator: object = None
    learner: object = None
    evaluator: object = None
    timings: dict = field(default_factory=dict)


def validate(cfg) -> None:
    """Cheap checks that fail before any model is loaded or any label is bought."""
    from rlaif.assets import resolve_model
    from rlaif.run.startup import check_config, check_context, check_prompt_file

    check_config(cfg)  # unknown keys in typed groups, secrets, ranges, trainer.report_to installed
    for group in ("generator", "acquisition", "oracle"):
        if cfg.get(group) is None:
            raise registry.ConfigError(f"no {group} selected: add {group}=<name> (see conf/{group}/)")
        registry.check(cfg[group], group)
    if cfg.budget.labels_per_round <= 0:
        raise BudgetError(f"budget.labels_per_round must be positive, got {cfg.budget.labels_per_round}")
    if cfg.budget.max_rounds is not None and cfg.budget.max_rounds <= 0:
        raise BudgetError(f"budget.max_rounds must be positive, got {cfg.budget.max_rounds}")
    Budget.from_config(cfg.budget)
    if cfg.task.source == "jsonl":
        check_prompt_file(cfg.task)  # given, a file, UTF-8
    if cfg.trainer.mode not in ("reset", "continue"):
        raise registry.ConfigError(f"trainer.mode must be 'reset' or 'continue', got {cfg.trainer.mode!r}")
    if cfg.policy.name_or_path not in ("smollm2", "tiny"):
        resolve_model(cfg.policy.name_or_path)
    check_context(cfg)  # the longest prompt + completion fit the policy's context


def eval_judged(cfg, oracle) -> bool:
    """Whether the oracle also judges the evaluation (``eval.with_oracle``; null: when it is free)."""
    return cfg.eval.with_oracle if cfg.eval.with_oracle is not None else oracle.free


def build(cfg, run_dir: Path) -> Parts:
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    oracle = registry.build(cfg.oracle, "oracle", task=cfg.task)
    budget, eval_budget = run_budgets(cfg.budget, cfg.eval, eval_judged(cfg, oracle))
    acquisition = registry.build(cfg.acquisition, "acquisition")
    ledger = Ledger(run_dir / "ledger.sqlite")
    state = RunState(run_dir)
    resumed = state.check_config(label_fingerprint(plain, oracle), ledger=ledger)
    guard = cfg.judge_health.enabled if cfg.judge_health.enabled is not None else not oracle.free
    labeler = Labeler(oracle, budget, ledger, shared=cfg.ledger_cache, eval_budget=eval_budget,
                      health=JudgeHealth(cfg.judge_health, oracle.name) if guard else None)
    labeler.check()  # fatal judge errors (bad key, unknown model, no price) stop here, before any spend
    # a no-op on a fresh run; on resume: what was already paid (and lost), training and evaluation apart
    got = budget.restore(ledger, purpose="train")
    if eval_budget is not None:
        eval_budget.restore(ledger, purpose="eval")
    budget.count_elapsed(state.elapsed_before)  # and the wall-clock time already used
    if resumed:
        log.info("resuming %s: %d paid labels in the ledger ($%.4f)", run_dir, got["paid_rows"], got["dollars"])
    return Parts(cfg, run_dir, budget, oracle, acquisition, ledger, state, labeler, resumed)


def load_models(p: Parts) -> None:
    """Policy (+ reference), prompts, generator, learner, evaluator."""
    import torch

    from rlaif.run.evaluation import Evaluator
    from rlaif.models.gold import load_gold
    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer
    from rlaif.tasks import load_prompts
    from rlaif.trainer.dpo import DPOLearner

    cfg = p.cfg
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    t = time.perf_counter()
    p.policy = Policy(cfg.policy, cfg.trainer, seed=cfg.seed)
    p.prompts = load_prompts(cfg.task, p.policy.tokenizer)
    p.reference = ReferenceScorer(p.policy)
    p.generator = registry.build(cfg.generator, "generator", policy=p.policy)
    p.learner = DPOLearner(cfg.trainer, p.policy, p.reference, seed=cfg.seed,
                           output_dir=str(p.run_dir / "state" / "trainer"))
    gold = load_gold(cfg.task.gold) if cfg.task.gold else None
    p.evaluator = Evaluator(cfg.eval, cfg.task, p.prompts.eval, p.generator, gold,
                            p.labeler if eval_judged(cfg, p.oracle) else None, seed=cfg.seed, run_dir=p.run_dir)
    p.timings["load_s"] = time.perf_counter() - t
    log.info("policy %s (%s), %d train / %d eval prompts, generator=%s, oracle=%s, arm=%s",
             cfg.policy.name_or_path, p.policy.device, len(p.prompts.train), len(p.prompts.eval),
             p.generator.name, p.oracle.name, p.acquisition.name)


def context(p: Parts, r: int) -> AcquisitionContext:
    return AcquisitionContext(generator=p.generator, reference_logprobs=p.reference,
                              rng=np.random.default_rng(round_seed(p.cfg.seed, r, "acquire")),
                              beta=p.cfg.trainer.beta, max_new_tokens=p.cfg.task.max_new_tokens,
                              min_new_tokens=p.cfg.task.min_new_tokens, round=r, seed=p.cfg.seed)


def write_preferences(run_dir: Path, rows: list[dict]) -> None:
    atomic_write_text(run_dir / "preferences.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def run(cfg, run_dir: str | Path) -> dict:
    """Run (or resume) the APL loop; returns the summary."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    p = build(cfg, run_dir)
    try:
        load_models(p)
        return _loop(p, started)
    finally:
        p.labeler.close()
        if p.generator is not None:
            p.generator.close()
        p.ledger.close()


def _loop(p: Parts, started: float) -> dict:
    cfg, state, budget = p.cfg, p.state, p.budget
    # Before any training the freshly loaded policy *is* the reference (a resumed run restores
    # trained weights only when it needs them), so the evaluation's reference completions and
    # any pre-sampling the arm needs (offline) happen now, seeded, on every start.
    p.evaluator.prepare()
    ctx0 = context(p, 0)
    t = time.perf_counter()
    p.acquisition.prepare(p.prompts.train, cfg.budget.labels, ctx0)
    prep = ctx0.stats.totals()
    if prep.generations or prep.scored:  # e.g. the offline arm's bank of reference pairs
        state.put("acquisition_0", {"seconds": time.perf_counter() - t, "stages": ctx0.stats.as_dict(),
                                    "generations": prep.generations, "tokens": prep.tokens, "scored": prep.scored})
    rows: list[dict] = []  # every decisive label so far, in TRL's prompt/chosen/rejected format
    used: set[str] = set()
    loaded_round = 0
    stopped_by = None
    prep = state.get("acquisition_0", {})  # compute spent before round 1 counts towards acquisition
    acq_seconds, acq_generations = prep.get("seconds", 0.0), float(prep.get("generations", 0))
    acquired = 0
    r = 0
    while True:
        r += 1
        if cfg.budget.max_rounds is not None and r > cfg.budget.max_rounds:
            stopped_by = "max_rounds"
            break
        done = state.metrics_of(r) is not None and state.trained(r) is not None
        pairs = state.pairs(r)
        # 1. acquire candidate pairs with the current policy (or reload this round's saved ones)
        if pairs is None:
            if budget.exhausted:
                break
            if loaded_round < r - 1:  # resumed: bring the policy to the end of the previous round
                _restore_policy(p, r - 1)
                loaded_round = r - 1
            want = cfg.budget.labels_per_round
            if budget.remaining_labels() is not None:
                want = min(want, budget.remaining_labels())
            pool = [q for q in p.prompts.train if q.id not in used]
            if not pool:
                stopped_by = "prompt pool exhausted"
                break
            ctx = context(p, r)
            t = time.perf_counter()
            pairs = p.acquisition.select(pool, want, ctx)
            stats = {"seconds": time.perf_counter() - t, "stages": ctx.stats.as_dict(),
                     "generations": ctx.stats.totals().generations, "tokens": ctx.stats.totals().tokens,
                     "scored": ctx.stats.totals().scored}
            state.save_pairs(r, pairs)  # before labelling: a resume labels exactly these
            state.put(f"acquisition_{r}", stats)
            log.info("round %d: acquired %d pairs with %s in %.1fs", r, len(pairs), p.acquisition.name,
                     stats["seconds"])
        stats = state.get(f"acquisition_{r}", {})
        used.update(q.prompt.id for q in pairs)
        if not pairs:
            stopped_by = "no pairs acquired"
            break
        # 2. ask the oracle (ledger hits are free; the budget may stop part-way)
        t = time.perf_counter()
        labels = p.labeler.label(pairs, purpose="train")
        label_s = time.perf_counter() - t
        bought = [(q, lab) for q, lab in zip(pairs, labels) if lab is not None]
        new_rows = [row for q, lab in bought if (row := preference_row(q, lab)) is not None]
        rows += new_rows
        write_preferences(p.run_dir, rows)
        acquired += len(bought)
        acq_seconds += stats.get("seconds", 0.0)
        acq_generations += stats.get("generations", 0)
        if not bought:
            stopped_by = budget.stopped_by or "nothing labelled"
            break
        # 3. train DPO on all labels so far (reset) or on this round's (continue)
        if not done:
            train_rows = rows if cfg.trainer.mode == "reset" else new_rows
            if loaded_round < r - 1 and cfg.trainer.mode == "continue":
                _restore_policy(p, r - 1)
            train_stats = _train(p, train_rows, r)
            loaded_round = r
            p.generator.sync()
            # 4. evaluate against the reference
            t = time.perf_counter()
            ev = p.evaluator.evaluate(r) if (cfg.eval.every_round or budget.exhausted) else {}
            eval_s = time.perf_counter() - t
            outcomes = [lab.outcome for _, lab in bought]
            metrics = {
                "round": r,
                "labels": acquired,
                "labels_round": len(bought),
                "decisive": len(rows),
                "ties": sum(o is Outcome.TIE for o in outcomes),
                "invalid": sum(o is Outcome.INVALID for o in outcomes),
                "cached": sum(lab.cached for _, lab in bought),
                "spend": budget.as_dict(),
                "eval_spend": eval_spend(p.ledger),
                "cost_round": sum(lab.cost for _, lab in bought),
                "tokens_round": sum(lab.tokens_in + lab.tokens_out for _, lab in bought),
                "latency_mean": float(np.mean([lab.latency for _, lab in bought])) if bought else 0.0,
                "acquisition": stats,
                "timings": {"acquire_s": stats.get("seconds", 0.0), "label_s": label_s,
                            "train_s": train_stats.get("seconds", 0.0), "eval_s": eval_s},
                "train": train_stats,
                "selected": _selected_summary(pairs, labels),
                **ev,
            }
            state.save_metrics(r, metrics)
            _log_round(metrics)
        if budget.exhausted:
            break
    stopped_by = stopped_by or budget.stopped_by or "done"
    if loaded_round < r - 1 and state.last_trained() is not None:
        _restore_policy(p, state.last_trained()[0])
    return _finish(p, rows, acquired, acq_seconds, acq_generations, stopped_by, started)


def _train(p: Parts, rows: list[dict], r: int) -> dict:
    ref = []
    for row in rows:
        prompt = Prompt(row["prompt_id"], row["prompt"], tuple(row["prompt_input_ids"]))
        ch = Completion(prompt, row["chosen"], tuple(row["chosen_input_ids"]))
        rj = Completion(prompt, row["rejected"], tuple(row["rejected_input_ids"]))
        ref.append((ch, rj))
    flat = p.reference([c for pair in ref for c in pair])  # cached: each completion scored once per run
    ref_logps = list(zip(flat[0::2], flat[1::2]))
    stats = p.learner.train(rows, ref_logps, r)
    adapter = p.run_dir / "state" / f"round_{r:04d}.model"
    p.policy.save_trained(adapter)
    p.state.mark_trained(r, adapter, **{k: v for k, v in stats.items() if isinstance(v, (int, float, str))})
    return stats


def _restore_policy(p: Parts, r: int) -> None:
    t = p.state.trained(r)
    if t is None or t.get("adapter") is None:
        return
    p.policy.reset(round_=r)
    p.policy.load_trained(t["adapter"])
    p.generator.sync()
    log.info("restored the policy trained in round %d", r)


def eval_spend(ledger: Ledger) -> dict:
    """What judging the evaluation cost so far (apart from the training labels' spend)."""
    t = ledger.totals(purpose="eval")
    return {"dollars": round(t["spent_dollars"], 8), "tokens": t["spent_tokens"], "judgements": t["paid"]}


def _selected_summary(pairs, labels) -> dict:
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


def _log_round(m: dict) -> None:
    ev = m.get("eval_spend", {})
    log.info("round %d: this round %d labels (%d decisive, %d ties, %d invalid); so far %d labels (%d decisive) | "
             "spend: training $%.4f / %d tokens, evaluation $%.4f / %d tokens | gold win-rate %s | "
             "oracle win-rate %s | train %.0fs, eval %.0fs", m["round"], m["labels_round"],
             m["labels_round"] - m["ties"] - m["invalid"], m["ties"], m["invalid"], m["labels"], m["decisive"],
             m["spend"]["dollars"], m["spend"]["tokens"], ev.get("dollars", 0.0), ev.get("tokens", 0),
             winrate_text(m, "gold_winrate"), winrate_text(m, "oracle_winrate"),
             m["timings"]["train_s"], m["timings"]["eval_s"])


def _finish(p: Parts, rows, acquired, acq_seconds, acq_generations, stopped_by, started) -> dict:
    cfg = p.cfg
    metrics = p.state.metrics()
    final = metrics[-1] if metrics else {}
    if cfg.save_model and p.state.last_trained() is not None:
        p.policy.save_trained(p.run_dir / "model")
    summary = {
        "run_dir": str(p.run_dir),
        "arm": p.acquisition.name,
        "oracle": p.oracle.name,
        "policy": cfg.policy.name_or_path,
        "generator": p.generator.name,
        "seed": cfg.seed,
        "rounds": len(metrics),
        "labels": acquired,
        "decisive_labels": len(rows),
        "stopped_by": stopped_by,
        "spend": p.budget.as_dict(),
        "eval_spend": eval_spend(p.ledger),
        "dollars_per_label": p.budget.as_dict()["dollars"] / acquired if acquired else None,
        "generations_per_label": acq_generations / acquired if acquired else None,
        "acquisition_seconds_per_label": acq_seconds / acquired if acquired else None,
        "reference_passes": p.reference.passes,
        "ledger": p.ledger.totals(),
        "wall_seconds": p.state.elapsed(),  # the whole run's, earlier processes included
        "session_seconds": time.perf_counter() - started,
        "resumed": p.resumed,
    }
    for k in ("gold_winrate", "gold_winrate_ci", "gold_winrate_n", "gold_reward", "gold_reward_ci",
              "reference_gold_reward", "oracle_winrate", "oracle_winrate_ci", "oracle_winrate_n",
              "oracle_winrate_note", "oracle_eval_asked", "oracle_eval_judged"):
        if k in final:
            summary[k] = final[k]
    atomic_write_text(p.run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    p.state.mark_finished(stopped_by=stopped_by)
    return summary
