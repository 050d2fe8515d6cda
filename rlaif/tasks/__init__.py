"""Prompt sets: disjoint train (acquisition pool) and eval prompts, tokenised once. One module per
source, the same names as ``conf/task/``:

- :mod:`~rlaif.tasks.imdb`: the paper's IMDB review openings (raw continuations);
- :mod:`~rlaif.tasks.jsonl`: a JSONL file of ``{"prompt": ...}`` or ``{"messages": [...]}`` lines;
- :mod:`~rlaif.tasks.hf`: anything ``datasets`` opens (parquet, arrow, jsonl, csv, save_to_disk, the hub).

:mod:`~rlaif.tasks.base` holds what they share: chat messages, the chat template, too-long prompts.
"""

from __future__ import annotations

from rlaif.tasks import hf, imdb, jsonl
from rlaif.tasks.base import CHAT_MODES, LONG_PROMPTS, SOURCES, PromptSet, TaskError, chat_mode, check_set

LOADERS = {"imdb": imdb.load, "jsonl": jsonl.load, "hf": hf.load}

__all__ = ["PromptSet", "TaskError", "check_prompt_file", "check_task", "load_prompts"]


def check_task(task) -> None:
    """The task's modes, and (source=hf) a dataset that is there with its columns: one line if not.

    Runs when the config is built (:class:`rlaif.config.TaskConfig`), before any model is loaded."""
    if task.source not in SOURCES:
        raise TaskError(f"task.source must be one of {', '.join(SOURCES)}, got {task.source!r}")
    chat_mode(task)
    if str(task.long_prompts) not in LONG_PROMPTS:
        raise TaskError(f"task.long_prompts must be drop or error, got {task.long_prompts!r}")
    if task.source == "hf":
        hf.check(task)


def check_prompt_file(task) -> None:
    """The task's prompt source is there and readable: task=jsonl's file (given, a file, UTF-8), task=hf's
    dataset (opens, has the columns); nothing to check for imdb."""
    if task.source == "hf":
        hf.check(task)
    elif task.source == "jsonl":
        jsonl.check_prompt_file(task)


def load_prompts(cfg, tokenizer) -> PromptSet:
    if cfg.source not in LOADERS:
        raise TaskError(f"task.source must be one of {', '.join(SOURCES)}, got {cfg.source!r}")
    return check_set(LOADERS[cfg.source](cfg, tokenizer))
