"""The generator: samples completions from the *current* policy and scores given completions.

One file per backend (``hf.py``, ``vllm.py``); ``conf/generator/`` uses the same names.
Every sampled completion carries its token ids and its summed log-prob under the policy
(raw model, before temperature), so entropy and implicit rewards come free with generation.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

from rlaif.types import Completion, Prompt

if TYPE_CHECKING:
    from pathlib import Path

    from rlaif.models.policy import Policy


@dataclass
class SamplingParams:
    n: int = 2
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 24
    min_new_tokens: int = 0
    seed: int | None = None


class Generator(ABC):
    """Samples from and scores under the current policy weights."""

    Config: ClassVar[type]
    name: ClassVar[str] = "base"
    samples_reference: ClassVar[bool] = False  # can sample(source="reference") from the frozen reference

    def __init__(self, cfg, policy: "Policy") -> None:
        self.cfg = cfg
        self.policy = policy

    @abstractmethod
    def sample(self, prompts: Sequence[Prompt], params: SamplingParams,
               source: str = "policy") -> list[list[Completion]]:
        """``params.n`` completions for each prompt, each with token ids and summed log-prob."""

    @abstractmethod
    def score(self, completions: Sequence[Completion]) -> list[float]:
        """Summed completion log-probs log pi(y|x) under the current policy weights."""

    def is_reference(self) -> bool:
        """True when the weights it samples from are exactly the reference's (before any training)."""
        return self.policy is not None and self.policy.is_reference()

    def sync(self) -> None:
        """Make the generator serve the policy's current weights (after a training round)."""

    def close(self) -> None:
        """Release engines and processes."""

    # -- the directory weights are written to for an engine or servers to reload ----------------
    _own_sync_dir: bool = False  # a temporary directory of ours (removed), not generator.sync_dir
    _sync_dir: "Path | None" = None

    def _drop_sync_dir(self) -> None:
        if self._own_sync_dir and self._sync_dir is not None:
            shutil.rmtree(self._sync_dir, ignore_errors=True)
            self._sync_dir = None

    def __del__(self):  # pragma: no cover -- interpreter shutdown order varies
        try:
            self._drop_sync_dir()
        except Exception:  # noqa: BLE001
            pass

    # -- scoring shared by the vLLM backends -----------------------------------------------------
    def _score_hf(self, completions: Sequence[Completion]) -> list[list[float]]:
        """Per-token log-probs of ``completions`` from a forward pass of the policy's HF model."""
        from rlaif.models.scoring import sequence_logprobs

        with self.policy.current() as model:
            return sequence_logprobs(model, [(c.prompt.token_ids, c.token_ids) for c in completions],
                                     pad_id=self.policy.pad_id, batch_size=self.cfg.score_batch_size,
                                     per_token=True)

    def _score_routed(self, completions: Sequence[Completion], max_model_len: int | None,
                      engine: Callable[[list[Completion]], list[list[float]]]) -> list[list[float]]:
        """Per-token log-probs through ``engine`` (a vLLM engine or server: ``prompt_logprobs``), except
        for completions with no prompt or no room for the one token an engine must generate: HF."""
        out: list[list[float] | None] = [None] * len(completions)
        via, too_long = [], []
        for i, c in enumerate(completions):
            n = len(c.prompt.token_ids) + len(c.token_ids)
            fits = max_model_len is None or n + 1 <= max_model_len
            (via if fits and c.prompt.token_ids else too_long).append(i)
        if via:
            for i, v in zip(via, engine([completions[i] for i in via])):
                out[i] = v
        if too_long:
            for i, v in zip(too_long, self._score_hf([completions[i] for i in too_long])):
                out[i] = v
        return out  # type: ignore[return-value]
