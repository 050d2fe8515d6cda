"""reward_model: score each completion with a classifier / reward model, prefer the higher score.

``model: imdb_sentiment`` is the gold TF-IDF sentiment model (free, ~0.90 accurate); any other
value is a Hugging Face sequence-classification model directory (or hub id where a hub exists),
whose ``positive_label`` logit (or single logit) is the score. Scores within ``tie_margin`` are
a tie. Free: a local judge costs nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from rlaif.oracle.base import Oracle, OracleConfig
from rlaif.types import Label, Outcome, Pair


@dataclass
class RewardModelConfig(OracleConfig):
    model: str = field(default="imdb_sentiment", metadata={
        "help": "'imdb_sentiment' (gold TF-IDF model) or an HF sequence-classification model dir"})
    score_text: str = field(default="completion", metadata={
        "help": "what is scored: 'completion' or 'prompt+completion'"})
    tie_margin: float = field(default=0.0, metadata={"help": "|score_a - score_b| <= margin is a tie"})
    positive_label: int = field(default=1, metadata={"help": "logit index of the preferred class (HF models)"})
    swap_p: float = field(default=0.0, metadata={  # a reward model has no position bias
        "help": "probability of showing the pair swapped (0: swapping changes nothing for a reward model)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per call of judge_shown"})


class RewardModelOracle(Oracle):
    Config = RewardModelConfig
    kind = "reward_model"
    free = True

    def __init__(self, cfg: RewardModelConfig, **kw) -> None:
        super().__init__(cfg, **kw)
        if cfg.score_text not in ("completion", "prompt+completion"):
            raise ValueError(f"oracle.score_text must be 'completion' or 'prompt+completion', got {cfg.score_text!r}")
        self.name = cfg.name or f"reward_model:{cfg.model}"
        self._scorer = None

    def identity(self) -> dict:
        return {**super().identity(), "model": self.cfg.model, "score_text": self.cfg.score_text,
                "tie_margin": self.cfg.tie_margin, "positive_label": self.cfg.positive_label}

    def _load(self):
        if self._scorer is None:
            if self.cfg.model == "imdb_sentiment":
                from rlaif.models.gold import load_gold

                self._scorer = load_gold("imdb_sentiment").score
            else:
                self._scorer = _hf_classifier(self.cfg.model, self.cfg.positive_label)
        return self._scorer

    async def setup(self) -> None:
        await asyncio.to_thread(self._load)

    def scores(self, pairs: Sequence[Pair]) -> tuple[list[float], list[float]]:
        score = self._load()
        text = (lambda p, c: p.prompt.text + c.text) if self.cfg.score_text != "completion" else (lambda p, c: c.text)
        s = score([text(p, p.a) for p in pairs] + [text(p, p.b) for p in pairs])
        return s[:len(pairs)], s[len(pairs):]

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        sa, sb = await asyncio.to_thread(self.scores, shown)
        out = []
        for a, b in zip(sa, sb):
            if abs(a - b) <= self.cfg.tie_margin:
                outcome = Outcome.TIE
            else:
                outcome = Outcome.A if a > b else Outcome.B
            out.append(Label(outcome=outcome, p_a=None, raw=f"score_a={a:.6f} score_b={b:.6f}", judge=self.name))
        return out


def _hf_classifier(path: str, positive_label: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlaif.assets import resolve_model

    d = resolve_model(path)
    tok = AutoTokenizer.from_pretrained(d)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(d).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id

    @torch.no_grad()
    def score(texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), 32):
            enc = tok(list(texts[i:i + 32]), return_tensors="pt", padding=True, truncation=True, max_length=512)
            logits = model(**enc).logits.float()
            out += (logits[:, 0] if logits.shape[-1] == 1 else logits[:, positive_label]).tolist()
        return out

    return score
