"""The pairs a judge benchmark asks about (``pairs=...``), the same for every judge of one benchmark.

* ``reviews`` (default, no model): IMDB reviews held out from the gold scorer's training; the
  prompt is a review's opening, ``a`` its own continuation, ``b`` another review's continuation,
  so the pairs differ in sentiment the way IMDB completions do. Token ids are UTF-8 bytes (these
  pairs are only judged, never trained on).
* ``policy``: ``n_pairs`` prompts of the task, two completions each sampled from the policy
  (``policy=...``, temperature ``pair_temperature``) -- the pairs an APL run would label.
* a run directory, its ``ledger.sqlite`` or its ``preferences.jsonl``: the pairs that run labelled
  (training labels of the ledger when there is one: ties and invalid answers included).

The chosen pairs are saved to ``<out>/pairs.jsonl`` on first use; later judges (the other jobs of
a multirun) read that file, so every judge sees exactly the same pairs.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from rlaif.labels.preferences import row_texts
from rlaif.errors import RlaifError
from rlaif.types import Completion, Pair, Prompt


class BenchError(RlaifError, ValueError):
    """A benchmark that cannot run as configured (no pairs, unknown source...)."""


def _byte_ids(text: str) -> tuple[int, ...]:
    return tuple(text.encode("utf-8"))


def review_pairs(n: int, seed: int = 0, prompt_words: int = 8, completion_words: int = 24) -> list[Pair]:
    from rlaif.assets import imdb_splits

    reviews = [t for t, _ in imdb_splits()["gold_test"] if len(t.split()) >= prompt_words + completion_words]
    if len(reviews) < 2:
        raise BenchError("pairs=reviews: the IMDB reviews are not available (run `rlaif prepare`)")
    rng = random.Random(seed)
    out, seen = [], set()
    for i in rng.sample(range(len(reviews)), min(n, len(reviews))):
        words = reviews[i].replace("<br />", " ").split()
        other = reviews[rng.randrange(len(reviews))].replace("<br />", " ").split()
        ptext = " ".join(words[:prompt_words])
        a = " " + " ".join(words[prompt_words:prompt_words + completion_words])
        b = " " + " ".join(other[prompt_words:prompt_words + completion_words])
        if a == b or ptext in seen:
            continue
        seen.add(ptext)
        p = Prompt(f"review-{i}", ptext, _byte_ids(ptext))
        out.append(Pair(p, Completion(p, a, _byte_ids(a), source="review"),
                        Completion(p, b, _byte_ids(b), source="review")))
    return out


def policy_pairs(cfg, n: int) -> list[Pair]:
    """Two on-policy completions for each of ``n`` training prompts of the task."""
    import os

    import torch

    from rlaif import registry
    from rlaif.generator.base import SamplingParams
    from rlaif.models.policy import Policy
    from rlaif.tasks import load_prompts

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    policy = Policy(cfg.policy, cfg.trainer, seed=cfg.seed)
    prompts = load_prompts(cfg.task, policy.tokenizer).train[:n]
    gen = registry.build(cfg.generator, "generator", policy=policy)
    try:
        params = SamplingParams(n=2, temperature=cfg.pair_temperature, max_new_tokens=cfg.task.max_new_tokens,
                                min_new_tokens=cfg.task.min_new_tokens, seed=cfg.seed)
        samples = gen.sample(prompts, params)
    finally:
        gen.close()
    return [Pair(p, s[0], s[1]) for p, s in zip(prompts, samples) if s[0].token_ids != s[1].token_ids]


def run_pairs(path: Path, n: int) -> list[Pair]:
    """Pairs from a run directory, its ledger or its preferences.jsonl (first ``n``, in labelling order)."""
    from rlaif.labels.ledger import Ledger

    ledger = path / "ledger.sqlite" if path.is_dir() else path if path.suffix == ".sqlite" else None
    if ledger is not None and ledger.exists():
        led = Ledger(ledger, readonly=True)
        try:
            rows = led.rows(purpose="train")
        finally:
            led.close()
        pairs, seen = [], set()
        for r in rows:
            p = Pair.from_dict(json.loads(r["pair_json"]))
            if p.id not in seen:
                seen.add(p.id)
                pairs.append(p)
        return pairs[:n]
    prefs = path / "preferences.jsonl" if path.is_dir() else path
    if not prefs.exists():
        raise BenchError(f"pairs={path}: no ledger.sqlite or preferences.jsonl there")
    pairs = []
    for line in prefs.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        prompt, chosen, rejected = row_texts(r)  # a chat row: the last user message, the two answers
        p = Prompt(r.get("prompt_id", ""), prompt, tuple(r["prompt_input_ids"]))
        # chosen/rejected are re-ordered by a content hash so the judge is not shown the winner first
        a, b = Completion(p, chosen, tuple(r["chosen_input_ids"])), \
            Completion(p, rejected, tuple(r["rejected_input_ids"]))
        pairs.append(Pair(p, a, b) if hashlib.sha256(chosen.encode()).digest()[0] % 2 else Pair(p, b, a))
    return pairs[:n]


def load_pairs(cfg, out: Path) -> list[Pair]:
    """The benchmark's pairs: ``<out>/pairs.jsonl`` when an earlier judge of this benchmark made it."""
    saved = out / "pairs.jsonl"
    spec = {"pairs": str(cfg.pairs), "n_pairs": int(cfg.n_pairs), "seed": int(cfg.seed)}
    if saved.exists():
        lines = saved.read_text().splitlines()
        head = json.loads(lines[0])
        if head.get("spec") != spec:
            raise BenchError(f"{out} already holds a benchmark over other pairs ({head.get('spec')}); "
                             f"use another out=... for pairs={cfg.pairs} n_pairs={cfg.n_pairs}")
        return [Pair.from_dict(json.loads(x)) for x in lines[1:] if x.strip()]
    src = str(cfg.pairs)
    if src == "reviews":
        pairs = review_pairs(int(cfg.n_pairs), int(cfg.seed))
    elif src == "policy":
        pairs = policy_pairs(cfg, int(cfg.n_pairs))
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise BenchError(f"pairs={src!r}: not 'reviews', 'policy' or an existing run directory / file")
        pairs = run_pairs(path, int(cfg.n_pairs))
    if not pairs:
        raise BenchError(f"pairs={src}: no pairs found")
    out.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps({"spec": spec}) + "\n" + "".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    tmp.replace(saved)
    return pairs
