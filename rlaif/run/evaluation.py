"""Evaluation: win-rate of the policy against the reference on held-out prompts.

Both sample at the eval temperature (0.25, as in the paper). The reference completions are
drawn once, before any training, and reused every round (saved in ``eval_reference.jsonl``, so a
resumed run compares against the same ones). Figures come with 95% intervals
(:mod:`rlaif.report.intervals`) and their sample size: win-rate (ties count half, bootstrap interval) by
the gold scorer and, where enabled, by the oracle; mean gold reward of the policy (normal interval).

What the oracle is asked is accounted apart from the training labels: a policy completion
identical to the reference's is a tie at no cost (never sent to the judge); the judge's answers are
paid from the evaluation's own budget (``eval.max_dollars`` / ``eval.max_tokens``), and when that
runs out the figures say how many of the prompts were judged -- below ``eval.min_judged`` valid
answers no oracle win-rate is reported at all, only "too few valid answers (k of n)".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from rlaif.generator.base import SamplingParams
from rlaif.logger.progress import progress
from rlaif.report.intervals import bootstrap_interval, normal_interval
from rlaif.run.state import atomic_write_text
from rlaif.types import Completion, Label, Outcome, Pair, Prompt

log = logging.getLogger(__name__)


def too_few(judged: int, asked: int) -> str:
    return f"too few valid answers ({judged} of {asked})"


def winrate_text(m: dict, key: str) -> str:
    """``61.7% [55.1, 68.0] (n=256)``, or why there is no number (``too few valid answers (1 of 16)``)."""
    if key not in m:
        return m.get(f"{key}_note", "n/a")
    lo, hi = m[f"{key}_ci"]
    n = m.get(f"{key}_n")
    return f"{100 * m[key]:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" + (f" (n={n})" if n is not None else "")


class Evaluator:
    def __init__(self, cfg, task_cfg, prompts: Sequence[Prompt], generator, gold=None, labeler=None,
                 seed: int = 0, run_dir: Path | None = None, reference_logprobs=None) -> None:
        self.cfg, self.task_cfg = cfg, task_cfg
        self.prompts = list(prompts)[: cfg.prompts]
        self.generator, self.gold, self.labeler = generator, gold, labeler
        self.seed = seed
        self.run_dir = run_dir
        self.reference: list[Completion] | None = None
        self.reference_gold: list[float] | None = None
        self.reference_logprobs = reference_logprobs  # log pi_ref of given completions (the KL estimate)

    def _params(self) -> SamplingParams:
        return SamplingParams(n=1, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                              max_new_tokens=self.task_cfg.max_new_tokens,
                              min_new_tokens=self.task_cfg.min_new_tokens, seed=self.seed + 777)

    def prepare(self) -> None:
        """Sample the reference completions once. Call it before training: the policy equals the reference."""
        cache = self.run_dir / "eval_reference.jsonl" if self.run_dir else None
        if cache is not None and cache.exists():
            by_id = {p.id: p for p in self.prompts}
            rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
            self.reference = [Completion.from_dict(r["completion"], by_id[r["prompt_id"]]) for r in rows]
        else:
            # called before any training, so the current policy *is* the reference
            self.reference = [g[0] for g in self.generator.sample(self.prompts, self._params())]
            if cache is not None:
                atomic_write_text(cache, "".join(json.dumps({"prompt_id": c.prompt.id, "completion": c.to_dict()})
                                                 + "\n" for c in self.reference))
        if self.gold is not None:
            self.reference_gold = self.gold.score([c.text for c in self.reference])

    def evaluate(self, round_: int) -> dict:
        if self.reference is None:
            self.prepare()
        n = len(self.prompts)
        bar = progress(1 + (self.gold is not None) + (self.labeler is not None), f"evaluation of round {round_}", "stage")
        bar.set_postfix_str(f"sampling {n} policy completions")
        policy = [g[0] for g in self.generator.sample(self.prompts, self._params())]
        bar.update(1)
        out: dict = {"eval_prompts": n}
        if self.gold is not None:
            bar.set_postfix_str("gold scorer")
            pg = self.gold.score([c.text for c in policy])
            bar.update(1)
            wins = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(pg, self.reference_gold)]
            m, lo, hi = bootstrap_interval(wins, self.cfg.bootstrap, self.seed)
            out.update(gold_winrate=m, gold_winrate_ci=[lo, hi], gold_winrate_n=len(wins))
            m, lo, hi = normal_interval(pg)
            out.update(gold_reward=m, gold_reward_ci=[lo, hi], reference_gold_reward=float(np.mean(self.reference_gold)))
        if self.labeler is not None:
            bar.set_postfix_str("the oracle judges")
            out.update(self._judge(policy, round_))
            bar.update(1)
        bar.close()
        out.update(self._kl(round_))
        out["samples"] = [{"prompt": c.prompt.text, "policy": c.text, "reference": r.text}
                          for c, r in list(zip(policy, self.reference))[:3]]
        return out

    def _kl(self, round_: int) -> dict:
        """KL(pi || pi_ref) on ``eval.kl_prompts`` held-out prompts: y ~ pi at temperature 1 (no top-p), the
        per-sequence log-ratio log pi(y|x) - log pi_ref(y|x) averaged, with a normal interval. The
        policy's log-prob comes with the sample; the reference's is one pass."""
        k = min(int(getattr(self.cfg, "kl_prompts", 0) or 0), len(self.prompts))
        if k <= 0 or self.reference_logprobs is None:
            return {}
        params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=self.task_cfg.max_new_tokens,
                                min_new_tokens=self.task_cfg.min_new_tokens, seed=self.seed + 1000 * round_ + 991)
        samples = [g[0] for g in self.generator.sample(self.prompts[:k], params)]
        ref = self.reference_logprobs(samples)
        m, lo, hi = normal_interval([c.logprob - r for c, r in zip(samples, ref)])
        return {"kl_to_reference": m, "kl_to_reference_ci": [lo, hi], "kl_to_reference_n": k}

    def _judge(self, policy: Sequence[Completion], round_: int) -> dict:
        """The oracle's win-rate of the policy over the reference, with what it cost and its n."""
        pairs = [Pair(p, c, r, round=round_) for p, c, r in zip(self.prompts, policy, self.reference)]
        asked = len(pairs)
        same = [pair.identical for pair in pairs]  # a tie by definition: never paid for
        labels: list[Label | None] = [Label(Outcome.TIE, reason="identical completions") if s else None
                                      for s in same]
        todo = [i for i, s in enumerate(same) if not s]
        if todo:
            for i, lab in zip(todo, self.labeler.label([pairs[i] for i in todo], purpose="eval")):
                labels[i] = lab
        valid = [lab for lab in labels if lab is not None and lab.outcome is not Outcome.INVALID]
        refused = sum(lab is None for lab in labels)
        paid = [lab for i, lab in enumerate(labels) if lab is not None and not same[i]]
        out = {"oracle_eval_asked": asked, "oracle_eval_judged": len(valid),
               "oracle_eval_identical": sum(same), "oracle_eval_refused": refused,
               "oracle_eval_invalid": sum(lab.outcome is Outcome.INVALID for lab in paid),
               "oracle_eval_cost": float(sum(lab.cost for lab in paid)),
               "oracle_eval_tokens": int(sum(lab.tokens_in + lab.tokens_out for lab in paid))}
        if refused:
            log.warning("evaluation of round %d: the evaluation budget ran out after %d of %d judgements "
                        "(raise eval.max_dollars / eval.max_tokens, or eval.budget_share)", round_, asked - refused, asked)
        if len(valid) < max(1, self.cfg.min_judged):
            out["oracle_winrate_note"] = too_few(len(valid), asked)
            return out
        scored = [1.0 if lab.outcome is Outcome.A else 0.0 if lab.outcome is Outcome.B else 0.5 for lab in valid]
        m, lo, hi = bootstrap_interval(scored, self.cfg.bootstrap, self.seed)
        out.update(oracle_winrate=m, oracle_winrate_ci=[lo, hi], oracle_winrate_n=len(valid))
        return out
