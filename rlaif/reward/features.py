"""Frozen features of completions: pooled hidden states of a causal LM over prompt + completion.

The model runs on the exact token ids that were sampled (prompt ids then completion ids); the
hidden states of one layer are pooled over the completion's positions (``mean``) or taken at its
last token (``last``). Features depend only on the frozen model and the tokens, so they are cached
per completion (:attr:`Completion.key <rlaif.types.Completion.key>`) for the life of the extractor:
``passes`` counts the sequences actually run (cache misses), like the reference scorer's.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from rlaif.types import Completion, Label, Pair

if TYPE_CHECKING:
    from rlaif.acquisition.base import ComputeStats


@dataclass
class FeatureConfig:
    model: str = field(default="tiny", metadata={"help": "the frozen model (policy name or directory)"})
    layer: int = field(default=-1, metadata={"help": "hidden-state layer (0: embeddings, -1: last)"})
    pooling: str = field(default="mean", metadata={"help": "'mean' over completion tokens or 'last' token"})
    batch_size: int = field(default=32, metadata={"help": "sequences per forward pass"})

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureExtractor:
    """Feature vectors of completions under a frozen model, cached per completion."""

    def __init__(self, cfg: FeatureConfig, model_ctx: Callable[[], ContextManager[Any]], pad_id: int = 0) -> None:
        if cfg.pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {cfg.pooling!r}")
        self.cfg, self.model_ctx, self.pad_id = cfg, model_ctx, pad_id
        self.cache: dict[str, np.ndarray] = {}
        self.passes = 0

    @classmethod
    def load(cls, cfg: FeatureConfig) -> "FeatureExtractor":
        """An extractor over ``cfg.model`` loaded from disk (CPU, float32, eval)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlaif.assets import resolve_model

        d = resolve_model(cfg.model)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval().requires_grad_(False)
        tok = AutoTokenizer.from_pretrained(d)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return cls(cfg, lambda: contextlib.nullcontext(model), int(pad))

    @classmethod
    def of_policy(cls, policy: Any, cfg: FeatureConfig | None = None) -> "FeatureExtractor":
        """An extractor over a live :class:`~rlaif.models.policy.Policy`'s frozen reference weights
        (``cfg.model`` is set to the policy's name: what :meth:`load` reloads the same weights from)."""
        cfg = replace(cfg or FeatureConfig(), model=str(policy.cfg.name_or_path))
        return cls(cfg, policy.reference, policy.pad_id)

    def missing(self, completions: Sequence[Completion]) -> int:
        """How many distinct completions are not cached yet (the forward passes a call would run)."""
        return len({c.key for c in completions if c.key not in self.cache})

    def counted(self, completions: Sequence[Completion], stats: "ComputeStats | None",
                stage: str = "rm_features") -> np.ndarray:
        """Like calling the extractor, with the time and the forward passes (cache misses, ``scored``)
        counted in ``stats``' ``stage`` (no counting when ``stats`` is None)."""
        if stats is None:
            return self(completions)
        with stats.stage(stage) as st:
            before = self.passes
            feats = self(completions)
            st.scored += self.passes - before
        return feats

    def __call__(self, completions: Sequence[Completion]) -> np.ndarray:
        todo = list({c.key: c for c in completions if c.key not in self.cache}.values())
        for i in range(0, len(todo), max(1, self.cfg.batch_size)):
            chunk = todo[i:i + self.cfg.batch_size]
            for c, f in zip(chunk, self._run(chunk)):
                self.cache[c.key] = f
        self.passes += len(todo)
        if not completions:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[c.key] for c in completions])

    @torch.no_grad()
    def _run(self, chunk: Sequence[Completion]) -> list[np.ndarray]:
        seqs = [list(c.prompt.token_ids) + list(c.token_ids) for c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # right padding: positions as in scoring
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        with self.model_ctx() as model:
            dev = next(model.parameters()).device
            hs = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=True)
            h = hs.hidden_states[self.cfg.layer].float().cpu()
        out = []
        for i, c in enumerate(chunk):
            lo, hi = len(c.prompt.token_ids), len(seqs[i])
            lo = min(lo, hi - 1)  # an empty completion: its prompt's last position
            v = h[i, lo:hi].mean(0) if self.cfg.pooling == "mean" else h[i, hi - 1]
            out.append(v.numpy().astype(np.float32))
        return out


def pair_features(fx: FeatureExtractor, prefs: Sequence[tuple[Pair, Label]],
                  stats: "ComputeStats | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of the chosen and of the rejected side of every decisive (pair, label), [N, D] each
    (forward passes counted in ``stats``' ``rm_features`` stage where given)."""
    from rlaif.labels.preferences import chosen_rejected

    sides = [chosen_rejected(p, lab) for p, lab in prefs]
    feats = fx.counted([c for s in sides for c in s], stats)
    return feats[0::2], feats[1::2]
