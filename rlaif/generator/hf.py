"""hf: sampling and scoring with transformers (the fallback where vLLM is absent).

It shares the policy's live model object, so it always serves the current weights (``sync`` is
free). The summed log-prob of each sampled completion comes from the raw logits returned by
``generate`` (``output_logits=True``): no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from rlaif.generator.base import Generator, SamplingParams
from rlaif.models.scoring import sequence_logprobs
from rlaif.types import Completion, Prompt


@dataclass
class HFGeneratorConfig:
    batch_size: int = field(default=64, metadata={"help": "sequences per generate() call"})
    score_batch_size: int = field(default=32, metadata={"help": "sequences per scoring forward pass"})


class HFGenerator(Generator):
    Config = HFGeneratorConfig
    name = "hf"
    samples_reference = True  # the reference is the same model with the adapter disabled

    def __init__(self, cfg: HFGeneratorConfig, policy) -> None:
        super().__init__(cfg, policy)
        self.tokenizer = policy.tokenizer

    @torch.no_grad()
    def _generate(self, model, prompts: Sequence[Prompt], params: SamplingParams, source: str) -> list[list[Completion]]:
        device = next(model.parameters()).device
        n = params.n
        per_call = max(1, self.cfg.batch_size // max(1, n))
        out: list[list[Completion]] = []
        if params.seed is not None:
            torch.manual_seed(params.seed)
        pad, eos = self.policy.pad_id, self.policy.eos_id
        starts = range(0, len(prompts), per_call)
        for start in tqdm(starts, desc=f"sampling {len(prompts)}x{n}", disable=len(starts) < 2, leave=False):
            chunk = prompts[start:start + per_call]
            width = max(len(p.token_ids) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):  # left padding for generation
                ids[i, width - len(p.token_ids):] = torch.tensor(p.token_ids)
                mask[i, width - len(p.token_ids):] = 1
            kwargs = dict(do_sample=params.temperature > 0, max_new_tokens=params.max_new_tokens,
                          min_new_tokens=params.min_new_tokens or None, num_return_sequences=n,
                          pad_token_id=pad, eos_token_id=eos, output_logits=True, return_dict_in_generate=True)
            if params.temperature > 0:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or 0)
            res = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            new = res.sequences[:, width:].cpu()
            logits = torch.stack(res.logits, dim=1).float()  # (B*n, T, V): raw, before temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1).to(logits.device)).squeeze(-1).cpu()
            for i, p in enumerate(chunk):
                group = []
                for j in range(n):
                    row = i * n + j
                    toks = new[row].tolist()
                    length = len(toks)
                    if eos in toks:
                        length = toks.index(eos) + 1  # keep the EOS the model chose
                    toks = toks[:length]
                    lps = logp[row, :length].tolist()
                    text = self.tokenizer.decode(toks, skip_special_tokens=True)
                    group.append(Completion(prompt=p, text=text, token_ids=tuple(toks), logprob=float(sum(lps)),
                                            token_logprobs=tuple(lps), source=source))
                out.append(group)
        return out

    def sample(self, prompts: Sequence[Prompt], params: SamplingParams, source: str = "policy") -> list[list[Completion]]:
        if source == "reference":
            with self.policy.reference() as ref:
                return self._generate(ref, prompts, params, source)
        with self.policy.current() as model:
            return self._generate(model, prompts, params, source)

    def score(self, completions: Sequence[Completion]) -> list[float]:
        with self.policy.current() as model:
            return sequence_logprobs(model, [(c.prompt.token_ids, c.token_ids) for c in completions],
                                     pad_id=self.policy.pad_id, batch_size=self.cfg.score_batch_size)
