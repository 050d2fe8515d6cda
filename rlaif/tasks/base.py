"""What every task shares: the prompt set, its error, chat messages, and the encoder that turns a row
into a :class:`~rlaif.types.Prompt` (chat template or raw, too-long prompts dropped or refused).

A chat prompt is a list of ``{role, content}`` messages; the policy answers its last user turn (turns
after it are cut). With the chat template the policy sees the template's rendering with the generation
prompt (the exact ids TRL's conversational format gives), the judge the last user message; without it
both see the turns' contents joined by blank lines.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from rlaif.errors import RlaifError
from rlaif.types import Prompt

log = logging.getLogger("rlaif.tasks")

SOURCES = ("imdb", "jsonl", "hf")
CHAT_MODES = ("auto", "true", "false")
LONG_PROMPTS = ("drop", "error")


class TaskError(RlaifError, ValueError):
    pass


@dataclass
class PromptSet:
    train: list[Prompt]
    eval: list[Prompt]


def chat_mode(task: Any) -> str:
    """``task.chat_template`` as auto | true | false (a YAML boolean as its word)."""
    mode = str(getattr(task, "chat_template", "auto")).strip().lower()
    mode = {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}.get(mode, mode)
    if mode not in CHAT_MODES:
        raise TaskError(f"task.chat_template must be auto, true or false, got {task.chat_template!r}")
    return mode


def parse_messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A chat (list of {role, content}; a JSON string of one too) up to its last user turn."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TaskError(f"{where}: the messages are a string that is not a JSON list of "
                            "{role, content}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise TaskError(f"{where}: messages must be a non-empty list of {{role, content}}, got {type(value).__name__}")
    turns = []
    for m in value:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, (list, tuple)):  # content parts: keep the text ones
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise TaskError(f"{where}: each message needs a string 'role' and a string 'content', got {m!r:.80}")
        turns.append((m["role"], content))
    last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last is None or not turns[last][1].strip():
        raise TaskError(f"{where}: the messages have no non-empty user turn for the policy to answer")
    return tuple(turns[:last + 1])


class Encoder:
    """Rows -> prompts for one task: the chat template decided once, too-long prompts counted or refused."""

    def __init__(self, task: Any, tokenizer: Any, plain_is_instruction: bool) -> None:
        mode = chat_mode(task)
        has = bool(getattr(tokenizer, "chat_template", None))
        if mode == "true" and not has:
            raise TaskError("task.chat_template=true, but the policy's tokenizer has no chat template; set "
                            "task.chat_template=auto or false")
        self.tokenizer, self.limit = tokenizer, int(task.max_prompt_tokens)
        self.chat = mode == "true" or (mode == "auto" and has)  # messages go through the template
        self.plain = mode == "true" or (mode == "auto" and has and plain_is_instruction)  # plain strings too
        self.refuse = str(task.long_prompts) == "error"
        self.seen = self.dropped = 0

    def ids(self, messages: tuple[tuple[str, str], ...]) -> list[int]:
        chat = [{"role": r, "content": c} for r, c in messages]
        out = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])

    def prompt(self, pid: str, text: str | None = None, messages: tuple | None = None,
               where: str = "") -> Prompt | None:
        """The prompt of one row (a plain ``text`` or chat ``messages``); None when too long and dropped."""
        self.seen += 1
        if messages is None and self.plain:
            messages = (("user", text),)
        if messages is not None and self.chat:
            text = [c for r, c in messages if r == "user"][-1]
            ids = self.ids(messages)
        else:
            if messages is not None:
                text, messages = "\n\n".join(c for _, c in messages if c), None
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.limit:
            if self.refuse:
                raise TaskError(f"{where or pid}: the prompt has {len(ids)} tokens, more than task.max_prompt_tokens="
                                f"{self.limit} (task.long_prompts=drop skips such prompts)")
            self.dropped += 1
            return None
        return Prompt(id=pid, text=text, token_ids=tuple(ids), messages=messages)

    def report(self, where: str) -> None:
        """Log how many prompts were too long (and dropped)."""
        if self.dropped:
            log.info("task: dropped %d of %d prompts of %s longer than task.max_prompt_tokens=%d (after the "
                     "chat template; task.long_prompts=error refuses them instead)", self.dropped, self.seen,
                     where, self.limit)


def check_set(ps: PromptSet) -> PromptSet:
    """A usable prompt set: both parts non-empty and disjoint."""
    if not ps.train:
        raise TaskError("the task has an empty training prompt set")
    if not ps.eval:
        raise TaskError("the task has an empty evaluation prompt set")
    overlap = {p.token_ids for p in ps.train} & {p.token_ids for p in ps.eval}
    if overlap:
        raise TaskError(f"train and eval prompts overlap ({len(overlap)} shared)")
    return ps
