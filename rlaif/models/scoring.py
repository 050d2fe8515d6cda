"""Summed completion log-probs with a Hugging Face model, and the reference-model cache.

Only completion tokens count (prompt tokens excluded), on exactly the token ids that were
sampled -- the same ids DPO trains on.
"""

from __future__ import annotations

import threading
from typing import Sequence

import torch

from rlaif.types import Completion


@torch.no_grad()
def sequence_logprobs(model, seqs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                      pad_id: int = 0, batch_size: int = 32,
                      per_token: bool = False) -> list:
    """log pi(completion | prompt) summed over completion tokens, for each (prompt_ids, completion_ids)."""
    device = next(model.parameters()).device
    out: list = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        full = [list(p) + list(c) for p, c in chunk]
        width = max(len(s) for s in full)
        ids = torch.full((len(full), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(full), width), dtype=torch.long)
        for i, s in enumerate(full):  # right padding keeps positions simple
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # tok[t] = log p(ids[t+1])
        for i, (p, c) in enumerate(chunk):
            lo, hi = len(p) - 1, len(p) + len(c) - 1
            vals = tok[i, lo:hi]
            out.append(vals.cpu().tolist() if per_token else float(vals.sum()))
    return out


class ReferenceScorer:
    """log pi_ref(y|x) for completions, computed once per completion and cached for the run.

    The reference model comes from ``policy.reference()`` (for a LoRA policy: the base with the
    adapter disabled).
    """

    def __init__(self, policy, batch_size: int = 32) -> None:
        self.policy = policy
        self.batch_size = batch_size
        self.cache: dict[str, float] = {}
        self.passes = 0  # sequences actually scored (cache misses)
        self._lock = threading.Lock()

    def __call__(self, completions: Sequence[Completion]) -> list[float]:
        with self._lock:
            todo = list({c.key: c for c in completions if c.key not in self.cache}.values())
            if todo:
                with self.policy.reference() as ref:
                    vals = sequence_logprobs(ref, [(c.prompt.token_ids, c.token_ids) for c in todo],
                                             pad_id=self.policy.pad_id, batch_size=self.batch_size)
                self.passes += len(todo)
                for c, v in zip(todo, vals):
                    self.cache[c.key] = v
            return [self.cache[c.key] for c in completions]

    def pairs(self, pairs: Sequence[tuple[Completion, Completion]]) -> list[tuple[float, float]]:
        """``(log pi_ref(first), log pi_ref(second))`` per pair (scored in one call, in pair order)."""
        flat = self([c for pair in pairs for c in pair])
        return list(zip(flat[0::2], flat[1::2]))

    def state(self) -> dict:
        return dict(self.cache)

    def load_state(self, d: dict) -> None:
        self.cache.update(d)
