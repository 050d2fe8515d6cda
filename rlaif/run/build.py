"""The parts a run is wired from, and their construction, in the order a run needs them.

    validate(cfg)             cheap checks, before anything is loaded or bought
    parts = build(cfg, dir)   the judge, the arm, the ledger, the run state, the budget (restored on resume)
    load_models(parts)        the policy, its prompts, the reference scorer, the generator, the learner,
                              the evaluator: ``parts.models``

:func:`build` spends nothing and loads no model; :func:`load_models` is the slow part.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from rlaif import registry
from rlaif.labels.budget import Budget, BudgetError, run_budgets
from rlaif.labels.judge_health import JudgeHealth
from rlaif.labels.labeler import Labeler
from rlaif.labels.ledger import Ledger
from rlaif.run.fingerprint import label_fingerprint
from rlaif.run.state import RunState

if TYPE_CHECKING:
    from rlaif.acquisition.base import Acquisition
    from rlaif.generator.base import Generator
    from rlaif.logger.base import Logger
    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer
    from rlaif.oracle.base import Oracle
    from rlaif.run.evaluation import Evaluator
    from rlaif.tasks import PromptSet
    from rlaif.trainer.dpo import DPOLearner

log = logging.getLogger("rlaif")


@dataclass
class Models:
    """The models of a run and what is built on them (by :func:`load_models`)."""

    policy: Policy
    prompts: PromptSet
    reference: ReferenceScorer  # log pi_ref, cached per completion for the whole run
    generator: Generator
    learner: DPOLearner
    evaluator: Evaluator
    load_s: float  # seconds spent loading

    def load_round(self, r: int, adapter: Path) -> None:
        """Load round ``r``'s trained weights into the policy (a resumed run)."""
        self.policy.reset(round_=r)
        self.policy.load_trained(adapter)
        self.generator.sync()
        log.info("restored the policy trained in round %d", r)


@dataclass
class Parts:
    """Everything the loop is wired from (built by :func:`build`; ``models`` by :func:`load_models`)."""

    cfg: DictConfig
    run_dir: Path
    budget: Budget  # the training labels' budget
    oracle: Oracle
    acquisition: Acquisition
    ledger: Ledger
    state: RunState
    labeler: Labeler
    resumed: bool = False
    models: Models | None = None
    logger: Logger | None = None  # the experiment tracker (logger=), started by the loop


def validate(cfg: DictConfig) -> None:
    """Cheap checks that fail before any model is loaded or any label is bought."""
    from rlaif.assets import resolve_model
    from rlaif.run.startup import check_config, check_context
    from rlaif.tasks import check_prompt_file

    check_config(cfg)  # unknown keys in typed groups, secrets, ranges, trainer.report_to installed, modes
    for group in ("generator", "acquisition", "oracle"):
        if cfg.get(group) is None:
            raise registry.ConfigError(f"no {group} selected: add {group}=<name> (see conf/{group}/)")
        registry.check(cfg[group], group)
    if cfg.budget.labels_per_round <= 0:
        raise BudgetError(f"budget.labels_per_round must be positive, got {cfg.budget.labels_per_round}")
    if cfg.budget.max_rounds is not None and cfg.budget.max_rounds <= 0:
        raise BudgetError(f"budget.max_rounds must be positive, got {cfg.budget.max_rounds}")
    Budget.from_config(cfg.budget)
    check_logger(cfg)
    check_prompt_file(cfg.task)  # task=jsonl: given, a file, UTF-8; task=hf: opens, has the columns
    if cfg.policy.name_or_path not in ("smollm2", "tiny"):
        resolve_model(cfg.policy.name_or_path)
    check_context(cfg)  # the longest prompt + completion fit the policy's context


def check_logger(cfg: DictConfig) -> None:
    """``logger=``: a valid config and its tracker's package importable (one line if not, before any spend)."""
    if cfg.get("logger") is not None:
        registry.check(cfg.logger, "logger")
        registry.resolve_class(cfg.logger, "logger").check()


def build_logger(cfg: DictConfig) -> Logger:
    """The run's experiment tracker (``logger=``; none when the config names none)."""
    from rlaif.logger.none import NoLogger

    if cfg.get("logger") is None:
        return NoLogger(NoLogger.Config())
    return registry.build(cfg.logger, "logger")


def tracker_group(cfg: DictConfig) -> tuple[str | None, Path | None]:
    """The tracker group of this run and the directory a sweep's runs share: ``logger.group``, else the
    sweep directory of a Hydra multirun (its runs grouped), else none."""
    group = cfg.logger.get("group") if cfg.get("logger") is not None else None
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        sweep = Path(str(hc.sweep.dir)) if str(hc.mode) == "RunMode.MULTIRUN" else None
    except ValueError:  # not under Hydra
        sweep = None
    return (group or (str(sweep) if sweep is not None else None)), sweep


def eval_judged(cfg: DictConfig, oracle: Oracle) -> bool:
    """Whether the oracle also judges the evaluation (``eval.with_oracle``; null: when it is free)."""
    return cfg.eval.with_oracle if cfg.eval.with_oracle is not None else oracle.free


def build(cfg: DictConfig, run_dir: Path) -> Parts:
    """Validate, then the judge, the arm, the ledger, the run state and the budgets (no model yet)."""
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
    return Parts(cfg, run_dir, budget, oracle, acquisition, ledger, state, labeler, resumed,
                 logger=build_logger(cfg))


def load_models(p: Parts) -> Models:
    """Policy (+ reference), prompts, generator, learner, evaluator -> ``p.models``."""
    import torch

    from rlaif.models.gold import load_gold
    from rlaif.models.policy import Policy
    from rlaif.models.scoring import ReferenceScorer
    from rlaif.run.evaluation import Evaluator
    from rlaif.tasks import load_prompts
    from rlaif.trainer.dpo import DPOLearner

    cfg = p.cfg
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    t = time.perf_counter()
    policy = Policy(cfg.policy, cfg.trainer, seed=cfg.seed)
    prompts = load_prompts(cfg.task, policy.tokenizer)
    reference = ReferenceScorer(policy)
    generator = registry.build(cfg.generator, "generator", policy=policy)
    try:
        learner = DPOLearner(cfg.trainer, policy, reference, seed=cfg.seed,
                             output_dir=str(p.run_dir / "state" / "trainer"))
        gold = load_gold(cfg.task.gold) if cfg.task.gold else None
        evaluator = Evaluator(cfg.eval, cfg.task, prompts.eval, generator, gold,
                              p.labeler if eval_judged(cfg, p.oracle) else None, seed=cfg.seed, run_dir=p.run_dir,
                              reference_logprobs=reference)
    except BaseException:
        generator.close()  # the run never gets to close it
        raise
    p.models = Models(policy, prompts, reference, generator, learner, evaluator, load_s=time.perf_counter() - t)
    log.info("policy %s (%s), %d train / %d eval prompts, generator=%s, oracle=%s, arm=%s",
             cfg.policy.name_or_path, policy.device, len(prompts.train), len(prompts.eval),
             generator.name, p.oracle.name, p.acquisition.name)
    return p.models
