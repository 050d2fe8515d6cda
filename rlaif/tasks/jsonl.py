"""``jsonl``: one JSON object per line with a ``prompt`` string or a ``messages`` chat (a list of
``{role, content}``), optional ``id`` and ``split`` (``train`` / ``eval``). Without ``split`` fields the
file is split into disjoint sets (seeded). Plain prompts stay raw (``task.chat_template=true`` renders
them as one user turn); chats get the policy's chat template (``auto``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlaif.tasks.base import Encoder, PromptSet, TaskError, parse_messages


def check_prompt_file(task) -> None:
    """``task=jsonl``: the prompt file is given, exists, is a file, and is UTF-8 text."""
    if not task.path:
        raise TaskError("task=jsonl needs the prompt file: add task.path=PROMPTS.jsonl (one {\"prompt\": ...} "
                        "or {\"messages\": [...]} object per line)")
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


def _row(obj, where: str) -> tuple[str | None, tuple | None]:
    """(prompt text, chat messages) of one line: exactly one of them."""
    if isinstance(obj, dict) and obj.get("messages") is not None and "prompt" not in obj:
        return None, parse_messages(obj["messages"], where)
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise TaskError(f"{where}: each line needs a non-empty string field 'prompt' or a 'messages' list "
                        "of {role, content}")
    return obj["prompt"], None


def _read(path: Path) -> list[tuple]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            text, messages = _row(obj, f"{path}:{lineno}")
            split = obj.get("split")
            if split not in (None, "train", "eval"):
                raise TaskError(f"{path}:{lineno}: split must be 'train' or 'eval', got {split!r}")
            rows.append((str(obj.get("id", f"line-{lineno}")), text, messages, split, f"{path}:{lineno}"))
    if not rows:
        raise TaskError(f"task.path: {path} holds no prompts")
    return rows


def load(cfg, tokenizer) -> PromptSet:
    check_prompt_file(cfg)  # given, a file, UTF-8
    path = Path(cfg.path).expanduser()
    enc = Encoder(cfg, tokenizer, plain_is_instruction=False)
    prompts, splits = [], []
    for pid, text, messages, split, where in _read(path):
        p = enc.prompt(pid, text, messages, where)
        if p is not None:
            prompts.append(p)
            splits.append(split)
    enc.report(str(path))
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
