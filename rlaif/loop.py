"""The Active Preference Learning loop (Muldrew et al., 2024), as in the paper::

    D = {}                                             # the preference set
    for round r = 1, 2, ... until the label budget is spent:
        pairs  = acquire(policy_{r-1}, unused prompts)  # 1. the arm picks pairs to label
        labels = oracle(pairs)                          # 2. ask for a preference on each
        D     += decisive(pairs, labels)
        policy_r = DPO(reference, D)                    # 3. reset to the reference and train on D
                                                        #    (trainer.mode=continue: policy_{r-1} on the new labels)
        evaluate(policy_r)                              # 4. win-rate against the reference

:func:`run` does exactly that: :func:`_round` reads step by step as :func:`_acquire`,
:func:`_label`, :func:`_train`, :func:`_evaluate` (beside the algorithm, ``reward_model.fit_each_round``
fits a reward model on D after step 2: :func:`_fit_reward_model`). The parts come from
:mod:`rlaif.run.build`, the figures of a round and of the run from :mod:`rlaif.run.metrics`, the
preference set from :mod:`rlaif.labels.preferences`.

Everything is checkpointed in the run directory so a killed run resumes where it stopped:
acquired pairs are saved before labelling, every paid label is in the ledger, every trained
adapter is saved before the round is marked trained. A resumed run replays the rounds already
done (their labels are free ledger hits, so the preference set is rebuilt exactly); it trains no
round twice, and brings the policy to the end of the round it needs only when it needs it
(:class:`~rlaif.run.state.PolicyRestorer`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlaif.acquisition.base import AcquisitionContext
from rlaif.errors import RlaifError
from rlaif.labels.preferences import Preference, PreferenceSet
from rlaif.logger.base import LoggerError, round_scalars
from rlaif.logger.progress import dpo_line, quiet_libraries
from rlaif.run import metrics
from rlaif.run.build import Models, Parts, build, load_models, validate
from rlaif.run.evaluation import winrate_text
from rlaif.run.state import PolicyRestorer, atomic_write_text, round_seed
from rlaif.types import Label, Pair

if TYPE_CHECKING:
    from rlaif.reward.rounds import RoundRewardModels

__all__ = ["run", "validate"]  # validate: the start-up check the CLI runs before run()

log = logging.getLogger("rlaif")


@dataclass
class Progress:
    """What the rounds so far add up to (a resumed run rebuilds it by replaying the saved rounds)."""

    restorer: PolicyRestorer
    prefs: PreferenceSet = field(default_factory=PreferenceSet)  # every decisive label so far
    used: set[str] = field(default_factory=set)  # ids of the prompts already acquired
    labels: int = 0  # labels bought (decisive or not)
    acquire_seconds: float = 0.0
    acquire_generations: float = 0.0
    stopped_by: str | None = None
    reward_models: RoundRewardModels | None = None  # reward_model.fit_each_round: the per-round fits


def run(cfg, run_dir: str | Path) -> dict:
    """Run (or resume) the APL loop; returns the summary."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    p = build(cfg, run_dir)
    summary: dict | None = None
    try:
        quiet_libraries()  # no progress-bar spam from transformers / datasets in a log that is not a terminal
        _start_tracker(p)
        load_models(p)
        summary = _loop(p, started)
        return summary
    finally:
        if p.logger is not None:
            p.logger.finish(summary, failed=summary is None)
        p.labeler.close()
        if p.models is not None:
            p.models.generator.close()
        p.ledger.close()


def _loop(p: Parts, started: float) -> dict:
    m = p.models
    assert m is not None, "load_models(p) first"
    # Before any training the freshly loaded policy *is* the reference (a resumed run restores
    # trained weights only when it needs them), so the evaluation's reference completions and
    # any pre-sampling the arm needs (offline) happen now, seeded, on every start.
    m.evaluator.prepare()
    _prepare_acquisition(p, m)
    prep = p.state.get("acquisition_0", {})  # compute spent before round 1 counts towards acquisition
    progress = Progress(PolicyRestorer(p.state, m.load_round), acquire_seconds=prep.get("seconds", 0.0),
                        acquire_generations=float(prep.get("generations", 0)))
    r = 0
    while True:
        r += 1
        if p.cfg.budget.max_rounds is not None and r > p.cfg.budget.max_rounds:
            progress.stopped_by = "max_rounds"
            break
        if not _round(p, m, progress, r):
            break
    progress.stopped_by = progress.stopped_by or p.budget.stopped_by or "done"
    progress.restorer.at_end(r)
    return _finish(p, m, progress, started)


def _round(p: Parts, m: Models, progress: Progress, r: int) -> bool:
    """Round ``r``: acquire -> label -> train -> evaluate. False when the run stops here
    (``progress.stopped_by`` says why, where the round knows)."""
    done = p.state.metrics_of(r) is not None and p.state.trained(r) is not None  # by an earlier process
    # 1. acquire candidate pairs with the current policy (or reload this round's saved ones)
    pairs = p.state.pairs(r)
    if pairs is None:
        if p.budget.exhausted:
            return False
        progress.restorer.bring_to(r - 1)  # resumed: the policy at the end of the previous round
        pairs = _acquire(p, m, progress, r)
        if pairs is None:
            return False
    acquisition = p.state.get(f"acquisition_{r}", {})
    progress.used.update(q.prompt.id for q in pairs)
    if not pairs:
        progress.stopped_by = "no pairs acquired"
        return False
    # 2. ask the oracle (ledger hits are free; the budget may stop part-way)
    labels, bought, new, label_s = _label(p, progress, pairs)
    progress.acquire_seconds += acquisition.get("seconds", 0.0)
    progress.acquire_generations += acquisition.get("generations", 0)
    if not bought:
        progress.stopped_by = p.budget.stopped_by or "nothing labelled"
        return False
    reward_model = _fit_reward_model(p, m, progress, r)  # {} unless reward_model.fit_each_round
    if not done:
        # 3. train DPO on all labels so far (reset) or on this round's (continue)
        train = _train(p, m, progress, new, r)
        # 4. evaluate against the reference
        evaluation, eval_s = _evaluate(p, m, r)
        line = metrics.round_metrics(
            r, pairs=pairs, labels=labels, bought=bought, labels_so_far=progress.labels,
            decisive_so_far=len(progress.prefs), spend=p.budget.as_dict(),
            eval_spend=metrics.eval_spend(p.ledger.totals(purpose="eval")), acquisition=acquisition,
            label_s=label_s, train=train, eval_s=eval_s, evaluation=evaluation)
        if reward_model:
            line["reward_model"] = reward_model
        p.state.save_metrics(r, line)
        _log_round(line)
        _track(p, line)
    return not p.budget.exhausted


def _start_tracker(p: Parts) -> None:
    """The experiment tracker's run (``logger=``): the redacted config as its parameters; a resumed run
    continues the same tracker run where the tracker allows it."""
    from omegaconf import OmegaConf

    from rlaif.cli.common import redact
    from rlaif.run.build import tracker_group

    if p.logger is None:
        return
    group, group_dir = tracker_group(p.cfg)
    config = redact(OmegaConf.to_container(p.cfg, resolve=True)) if OmegaConf.is_config(p.cfg) else redact(p.cfg)
    name = (p.cfg.logger.get("name") if p.cfg.get("logger") is not None else None) or p.run_dir.name
    try:
        p.logger.start(config, p.run_dir, name, group, group_dir=group_dir)
    except Exception as e:  # before any label is bought: one line, the run can be started again
        first = (str(e).strip().splitlines() or [""])[0]
        raise LoggerError(f"logger={p.logger.name}: the tracker could not start ({type(e).__name__}: {first}); "
                          "nothing was bought, fix it or choose logger=none and run again") from e


def _track(p: Parts, line: dict) -> None:
    """Round ``line`` to the tracker at step = labels bought so far. A tracker that fails is reported,
    never a reason to stop a run whose labels are paid (metrics.jsonl has the figures)."""
    if p.logger is None:
        return
    try:
        p.logger.log(round_scalars(line), step=int(line["labels"]))
    except Exception as e:  # noqa: BLE001
        log.warning("logger=%s could not log round %d (%s: %s); metrics.jsonl has it", p.logger.name,
                    line["round"], type(e).__name__, e)


def _context(p: Parts, m: Models, r: int, prefs: list[Preference] | tuple = ()) -> AcquisitionContext:
    """The arm's view of round ``r``: generator, reference scorer, the round's own seeded RNG and the
    decisive labels so far (``prefs``)."""
    return AcquisitionContext(generator=m.generator, reference_logprobs=m.reference,
                              rng=np.random.default_rng(round_seed(p.cfg.seed, r, "acquire")),
                              beta=p.cfg.trainer.beta, max_new_tokens=p.cfg.task.max_new_tokens,
                              min_new_tokens=p.cfg.task.min_new_tokens, round=r, seed=p.cfg.seed,
                              preferences=tuple(prefs))


def _acquisition_stats(ctx: AcquisitionContext, seconds: float) -> dict:
    """What the arm's acquisition cost (kept in the run state as ``acquisition_<round>``)."""
    totals = ctx.stats.totals()
    return {"seconds": seconds, "stages": ctx.stats.as_dict(), "generations": totals.generations,
            "tokens": totals.tokens, "scored": totals.scored}


def _prepare_acquisition(p: Parts, m: Models) -> None:
    """Whatever the arm does once before round 1 (e.g. the offline arm's bank of reference pairs)."""
    ctx = _context(p, m, 0)
    t = time.perf_counter()
    p.acquisition.prepare(m.prompts.train, p.cfg.budget.labels, ctx)
    prep = ctx.stats.totals()
    if prep.generations or prep.scored:
        p.state.put("acquisition_0", _acquisition_stats(ctx, time.perf_counter() - t))


def _acquire(p: Parts, m: Models, progress: Progress, r: int) -> list[Pair] | None:
    """Step 1: the arm selects this round's pairs from the unused prompts, saved before labelling.
    None when no prompt is left."""
    want = p.cfg.budget.labels_per_round
    if p.budget.labels_left() is not None:
        want = min(want, p.budget.labels_left())
    pool = [q for q in m.prompts.train if q.id not in progress.used]
    if not pool:
        progress.stopped_by = "prompt pool exhausted"
        return None
    ctx = _context(p, m, r, progress.prefs.items)
    t = time.perf_counter()
    pairs = p.acquisition.select(pool, want, ctx)
    check_weight_versions(pairs, m.policy.version)
    stats = _acquisition_stats(ctx, time.perf_counter() - t)
    p.state.save_pairs(r, pairs)  # before labelling: a resume labels exactly these
    p.state.put(f"acquisition_{r}", stats)
    log.info("round %d: acquired %d pairs with %s in %.1fs", r, len(pairs), p.acquisition.name, stats["seconds"])
    return pairs


class StaleWeightsError(RlaifError, RuntimeError):
    """A pair's policy completions were sampled from other weights than the policy's current ones."""


def check_weight_versions(pairs: list[Pair], version: int) -> None:
    """Refuse pairs whose policy completions a generator sampled from another policy version than
    ``version`` (completions that carry no version, and reference samples, are not checked)."""
    for q in pairs:
        for c in (q.a, q.b):
            if c.source == "policy" and c.weight_version is not None and c.weight_version != version:
                raise StaleWeightsError(
                    f"pair {q.id} (prompt {q.prompt.id!r}) was sampled from policy version {c.weight_version}, "
                    f"but the policy is at version {version}: the generator served stale weights; "
                    "nothing was labelled (check the generator's weight sync, then resume)")


def _label(p: Parts, progress: Progress,
           pairs: list[Pair]) -> tuple[list[Label | None], list[tuple[Pair, Label]], list[Preference], float]:
    """Step 2: the oracle's labels; the decisive ones join the preference set (rewritten on disk).
    -> (labels, bought (pair, label)s, new preferences, seconds)."""
    t = time.perf_counter()
    labels: list[Label | None] = p.labeler.label(pairs, purpose="train")
    label_s = time.perf_counter() - t
    bought = [(q, lab) for q, lab in zip(pairs, labels) if lab is not None]
    new = progress.prefs.add(bought)
    progress.prefs.write(p.run_dir / "preferences.jsonl")
    progress.labels += len(bought)
    return labels, bought, new, label_s


def _fit_reward_model(p: Parts, m: Models, progress: Progress, r: int) -> dict:
    """``reward_model.fit_each_round``: the head ensemble on every decisive label so far, over the policy's
    frozen reference features, saved in RUN_DIR/rm/round-<r>/ (a judge for ``oracle=fitted_rm``); its
    held-out agreement and cost (stages ``rm_features``, ``rm_fit``) for the round's metrics. {} when off."""
    cfg = p.cfg.get("reward_model")
    if cfg is None or not cfg.fit_each_round:
        return {}
    if progress.reward_models is None:
        from rlaif.reward.rounds import RoundRewardModels  # torch: only where it is used

        progress.reward_models = RoundRewardModels(cfg, p.run_dir / "rm", seed=p.cfg.seed)
    return progress.reward_models.fit(r, progress.prefs.items, m.policy)


def _train(p: Parts, m: Models, progress: Progress, new: list[Preference], r: int) -> dict:
    """Step 3: DPO on every preference so far (reset) or this round's (continue); the adapter is
    saved before the round is marked trained."""
    if p.cfg.trainer.mode == "continue":
        progress.restorer.bring_to(r - 1)  # resumed: continue from the previous round's policy
    stats = m.learner.train(progress.prefs.items if p.cfg.trainer.mode == "reset" else new, r)
    adapter = p.run_dir / "state" / f"round_{r:04d}.model"
    m.policy.save_trained(adapter)
    p.state.mark_trained(r, adapter, **{k: v for k, v in stats.items() if isinstance(v, (int, float, str))})
    progress.restorer.trained(r)
    m.generator.sync()
    log.info("round %d: %s", r, dpo_line(stats))
    return stats


def _evaluate(p: Parts, m: Models, r: int) -> tuple[dict, float]:
    """Step 4: win-rate against the reference (every round, or only the last: ``eval.every_round``)."""
    t = time.perf_counter()
    evaluation = m.evaluator.evaluate(r) if (p.cfg.eval.every_round or p.budget.exhausted) else {}
    return evaluation, time.perf_counter() - t


def _log_round(m: dict) -> None:
    ev = m.get("eval_spend", {})
    log.info("round %d: this round %d labels (%d decisive, %d ties, %d invalid); so far %d labels (%d decisive) | "
             "spend: training $%.4f / %d tokens, evaluation $%.4f / %d tokens | gold win-rate %s | "
             "oracle win-rate %s | train %.0fs, eval %.0fs", m["round"], m["labels_round"],
             m["labels_round"] - m["ties"] - m["invalid"], m["ties"], m["invalid"], m["labels"], m["decisive"],
             m["spend"]["dollars"], m["spend"]["tokens"], ev.get("dollars", 0.0), ev.get("tokens", 0),
             winrate_text(m, "gold_winrate"), winrate_text(m, "oracle_winrate"),
             m["timings"]["train_s"], m["timings"]["eval_s"])


def _finish(p: Parts, m: Models, progress: Progress, started: float) -> dict:
    """Save the final model (``save_model``), write summary.json, mark the run finished."""
    if p.cfg.save_model and p.state.last_trained() is not None:
        m.policy.save_trained(p.run_dir / "model")
    summary = metrics.summary(
        run={"run_dir": str(p.run_dir), "arm": p.acquisition.name, "oracle": p.oracle.name,
             "policy": p.cfg.policy.name_or_path, "generator": m.generator.name, "seed": p.cfg.seed},
        rounds=p.state.metrics(), labels=progress.labels, decisive=len(progress.prefs),
        stopped_by=progress.stopped_by, spend=p.budget.as_dict(),
        eval_spend=metrics.eval_spend(p.ledger.totals(purpose="eval")),
        generations=progress.acquire_generations, acquire_seconds=progress.acquire_seconds,
        reference_passes=m.reference.passes, ledger=p.ledger.totals(), wall_seconds=p.state.elapsed(),
        session_seconds=time.perf_counter() - started, resumed=p.resumed)
    atomic_write_text(p.run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    p.state.mark_finished(stopped_by=progress.stopped_by)
    return summary
