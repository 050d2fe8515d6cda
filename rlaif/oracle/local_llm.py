"""``local_llm``: a local causal LM as the judge, through transformers. Free.

The pair is rendered with the same ``prompts/`` template as the API judges (inside the
tokenizer's chat template when it has one), the answer is started with ``answer_prefix``
("Preferred:"), and P(A) is read from the next-token probabilities of the two answer letters
(" A" / "A" against " B" / "B"): one forward pass per batch, no sampling, no parsing.
P(A) > 1/2 + tie_margin is A, below 1/2 - tie_margin is B, otherwise a tie. A prompt longer than
the model's context is INVALID with its reason (cutting it would hide the rubric or a response).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from rlaif.oracle import templates
from rlaif.oracle.base import Oracle, OracleConfig, OracleError
from rlaif.types import Label, Outcome, Pair

log = logging.getLogger(__name__)


@dataclass
class LocalLLMConfig(OracleConfig):
    model: str = field(default="smollm2", metadata={
        "help": "'smollm2', 'tiny', or a local HF causal-LM directory (a hub id where a hub is reachable)"})
    template: Optional[str] = field(default=None, metadata={
        "help": "judge prompt: a name under prompts/ or a file path (default: the task's rubric)"})
    answer_prefix: str = field(default="Preferred:", metadata={
        "help": "text that starts the judge's answer, so the next token is the letter"})
    chat_template: bool = field(default=True, metadata={"help": "use the tokenizer's chat template when it has one"})
    tie_margin: float = field(default=0.0, metadata={"help": "|P(A) - 1/2| up to this is a tie"})
    min_letter_mass: float = field(default=0.0, metadata={
        "help": "invalid when P(A)+P(B) of the next token is below this (the model ignored the format)"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | auto"})
    max_length: Optional[int] = field(default=None, metadata={"help": "context limit (default: the model's)"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass"})
    concurrency: int = field(default=1, metadata={"help": "batches in flight at once", "fingerprint": False})


class LocalLLMOracle(Oracle):
    Config = LocalLLMConfig
    kind = "local_llm"
    free = True

    def __init__(self, cfg: LocalLLMConfig, *, task: Any = None, **kw: Any) -> None:
        super().__init__(cfg, task=task, **kw)
        self.template = templates.choose(cfg.template, task)
        if self.template.kind == "alpaca_eval":
            raise OracleError(f"oracle local_llm reads the answer letter after {cfg.answer_prefix!r}, not an "
                              f"alpaca_eval annotator's answers ({self.template.name}): use it with oracle=openai "
                              "or oracle=vllm_server, or give local_llm a plain or chat template")
        self.model = self.tok = None
        self._letters: dict[str, list[int]] = {}

    def identity(self) -> dict:
        c = self.cfg
        return {**super().identity(), "model": c.model, "template": self.template.name,
                "template_hash": self.template.hash, "answer_prefix": c.answer_prefix, "chat_template": c.chat_template,
                "tie_margin": c.tie_margin, "min_letter_mass": c.min_letter_mass, "dtype": c.dtype}

    async def setup(self) -> None:
        if self.model is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlaif.assets import resolve_model

        try:
            path = resolve_model(self.cfg.model)
            self.tok = AutoTokenizer.from_pretrained(path)
            dtype = getattr(torch, self.cfg.dtype)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        except (OSError, ValueError) as e:
            raise OracleError(f"oracle local_llm: cannot load judge model {self.cfg.model!r}: {e}") from None
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        for letter in ("A", "B"):
            ids = set()
            for variant in (letter, " " + letter):
                t = self.tok.encode(variant, add_special_tokens=False)
                if len(t) == 1:
                    ids.add(t[0])
            if not ids:
                raise OracleError(f"oracle local_llm: the tokenizer of {self.cfg.model!r} has no single token for "
                                  f"{letter!r}: P(A) cannot be read from one next token")
            self._letters[letter] = sorted(ids)
        limits = [getattr(self.model.config, k, None) for k in ("max_position_embeddings", "n_positions")]
        self.max_length = self.cfg.max_length or min([x for x in limits if x] or [4096])
        log.info("local_llm judge %s loaded (context %d)", path, self.max_length)

    def text_for(self, pair: Pair) -> str:
        """The exact text the model reads: template (in the chat template) + answer prefix."""
        messages = self.template.messages(pair.prompt.text, pair.a.text, pair.b.text)
        if self.cfg.chat_template and getattr(self.tok, "chat_template", None):
            chat = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return chat + self.cfg.answer_prefix
        body = "\n\n".join(m["content"] for m in messages)
        return f"{body}\n{self.cfg.answer_prefix}"

    def _forward(self, shown: Sequence[Pair]) -> list[Label]:
        import torch

        texts = [self.text_for(p) for p in shown]
        enc = [self.tok.encode(t, add_special_tokens=False) for t in texts]
        out: list[Label | None] = [None] * len(shown)
        fit = []
        for i, ids in enumerate(enc):
            if len(ids) > self.max_length:
                out[i] = Label.invalid(f"judge prompt of {len(ids)} tokens exceeds the model's context of "
                                       f"{self.max_length}", tokens_in=0)
            else:
                fit.append(i)
        if fit:
            batch = self.tok.pad({"input_ids": [enc[i] for i in fit]}, return_tensors="pt")
            ids, mask = batch["input_ids"].to(self.model.device), batch["attention_mask"].to(self.model.device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, :]
            probs = torch.softmax(logits.float(), dim=-1)
            pa = probs[:, self._letters["A"]].sum(-1)
            pb = probs[:, self._letters["B"]].sum(-1)
            for row, i in enumerate(fit):
                a, b = float(pa[row]), float(pb[row])
                raw = f"P(next=A)={a:.6f} P(next=B)={b:.6f}"
                n_in = len(enc[i])
                if a + b <= 0 or a + b < self.cfg.min_letter_mass:
                    out[i] = Label.invalid(f"the answer letters got only {a + b:.2e} of the next-token probability",
                                           raw=raw, tokens_in=n_in)
                    continue
                p_a = a / (a + b)
                outcome = (Outcome.TIE if abs(p_a - 0.5) <= self.cfg.tie_margin
                           else Outcome.A if p_a > 0.5 else Outcome.B)
                out[i] = Label(outcome=outcome, p_a=p_a, raw=raw, tokens_in=n_in, tokens_out=1)
        return out  # type: ignore[return-value]

    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        await self.setup()
        import time

        t0 = time.monotonic()
        labels = await asyncio.to_thread(self._forward, list(shown))
        per = (time.monotonic() - t0) / max(1, len(labels))
        for lab in labels:
            lab.latency = per
        return labels
