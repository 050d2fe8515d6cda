"""hybrid vs hybrid_reuse: what each costs per acquired label, and what it buys.

At the paper's IMDB settings scaled to a CPU (defaults: 8 labels, N=4 entropy samples, k=4 prompt
over-sampling, f=8 pair over-generation, p=2 top-entropy prompts per label for hybrid_reuse),
print side by side:

- generations per acquired label and acquisition seconds per label (compute, by stage);
- mean |r_a - r_b| and mean entropy of the kept pairs;
- the oracle's disagreement with the policy's implicit preference (sign of r_a - r_b) on them.

At round 0 the policy equals the reference, so every implicit reward is 0. The policy is therefore
moved first: a few DPO steps (LoRA) on oracle-labelled reference pairs of separate prompts, or --
where the oracle gives too few decisive labels -- a LoRA with random B. The output says which.

The oracle is the gold IMDB sentiment reward model (``conf/oracle/reward_model.yaml``) where it
exists; otherwise a clearly labelled proxy (the keyword sentiment judge).

    python benchmarks/bench_acquisition.py            # SmolLM2-135M, a few minutes on 2 cores
    python benchmarks/bench_acquisition.py --tiny     # the random tiny GPT-2, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rlaif.acquisition.base import AcquisitionConfig, AcquisitionContext
from rlaif.acquisition.hybrid import HybridAcquisition, HybridConfig
from rlaif.acquisition.hybrid_reuse import HybridReuseAcquisition, HybridReuseConfig
from rlaif.acquisition.random import RandomAcquisition
from rlaif.assets import imdb_splits, smollm2_dir, tiny_dir
from rlaif.config import PolicyConfig
from rlaif.generator.hf import HFGenerator, HFGeneratorConfig
from rlaif.models.policy import Policy
from rlaif.models.scoring import ReferenceScorer, sequence_logprobs
from rlaif.trainer.dpo_config import DPOConfig
from rlaif.types import Outcome, Prompt

ROOT = Path(__file__).resolve().parents[1]


def load_prompts(policy: Policy, count: int, offset: int) -> list[Prompt]:
    """IMDB review openings cut to 8-16 tokens (as the paper's IMDB task)."""
    rows = imdb_splits()["prompts"][offset:offset + count]
    out = []
    for i, (text, _) in enumerate(rows):
        ids = policy.tokenizer(text)["input_ids"][: 8 + (i * 7) % 9]
        out.append(Prompt(id=f"imdb{offset + i}", text=policy.tokenizer.decode(ids), token_ids=tuple(ids)))
    return out


def load_oracle():
    """The gold sentiment reward model if it exists, else the keyword judge (labelled a proxy)."""
    path = ROOT / "conf" / "oracle" / "reward_model.yaml"
    if path.exists():
        try:
            from rlaif.config import load_option
            from rlaif.registry import build

            return build(load_option(path), "oracle"), "gold IMDB sentiment reward model"
        except Exception as e:  # noqa: BLE001 -- report and fall back
            print(f"[oracle] reward_model unavailable ({type(e).__name__}: {e}); using a proxy")
    from rlaif.oracle.simulated import KeywordConfig, KeywordJudge

    return KeywordJudge(KeywordConfig(swap_p=0.0)), "PROXY: keyword sentiment judge (no gold reward model found)"


def _logps_with_grad(model, seqs, pad_id: int) -> torch.Tensor:
    full = [list(p) + list(c) for p, c in seqs]
    width = max(map(len, full))
    ids = torch.full((len(full), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(full):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    sel = torch.zeros_like(tok)
    for i, (p, c) in enumerate(seqs):
        sel[i, len(p) - 1:len(p) + len(c) - 1] = 1
    return (tok * sel).sum(-1)


def move_policy(policy: Policy, oracle, prompts: list[Prompt], ctx: AcquisitionContext, args) -> str:
    """A few DPO steps on oracle-labelled reference pairs; random LoRA B if too few are decisive."""
    pairs = RandomAcquisition(AcquisitionConfig()).select(prompts, args.warmup_pairs, ctx)
    labels = oracle.label(pairs)
    rows = [(p.a, p.b) if lab.outcome is Outcome.A else (p.b, p.a)
            for p, lab in zip(pairs, labels) if lab.outcome.decisive]
    if len(rows) < 4:
        g = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for name, prm in policy.model.named_parameters():
                if "lora_B" in name:
                    prm.copy_(torch.randn(prm.shape, generator=g) * args.random_b)
        return f"random LoRA B (scale {args.random_b}): only {len(rows)} decisive warm-up labels"
    seq = lambda cs: [(c.prompt.token_ids, c.token_ids) for c in cs]  # noqa: E731
    with policy.reference() as ref:
        ref_w = torch.tensor(sequence_logprobs(ref, seq([w for w, _ in rows]), pad_id=policy.pad_id))
        ref_l = torch.tensor(sequence_logprobs(ref, seq([l for _, l in rows]), pad_id=policy.pad_id))
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.warmup_lr)
    policy.model.eval()  # no dropout; gradients still flow into the adapter
    for _ in range(args.warmup_steps):
        pw = _logps_with_grad(policy.model, seq([w for w, _ in rows]), policy.pad_id)
        pl = _logps_with_grad(policy.model, seq([l for _, l in rows]), policy.pad_id)
        margin = args.beta * ((pw - ref_w) - (pl - ref_l))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = float((margin > 0).float().mean())
    return (f"{args.warmup_steps} DPO steps (LoRA, lr {args.warmup_lr}) on {len(rows)} oracle-labelled reference "
            f"pairs of separate prompts; final loss {loss.item():.3f}, train margin accuracy {acc:.2f}")


def run_arm(arm, policy, pool, args, oracle) -> dict:
    ctx = AcquisitionContext(generator=HFGenerator(HFGeneratorConfig(batch_size=args.batch_size), policy),
                             reference_logprobs=ReferenceScorer(policy), rng=np.random.default_rng(args.seed),
                             beta=args.beta, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                             round=1, seed=args.seed)
    t = time.perf_counter()
    pairs = arm.select(pool, args.labels, ctx)
    wall = time.perf_counter() - t
    print(f"[{arm.name}] {len(pairs)} pairs in {wall:.0f} s: {ctx.stats.as_dict()}", flush=True)
    labels = oracle.label(pairs)
    decisive = [(p, lab) for p, lab in zip(pairs, labels) if lab.outcome.decisive]
    disagree = [(lab.outcome is Outcome.A) != (p.scores["r_a"] > p.scores["r_b"]) for p, lab in decisive]
    tot = ctx.stats.totals()
    n = max(1, len(pairs))
    return {
        "pairs": len(pairs),
        "generations": tot.generations,
        "generations_per_label": tot.generations / n,
        "tokens_per_label": tot.tokens / n,
        "sequences_scored_per_label": tot.scored / n,
        "seconds_per_label": tot.seconds / n,
        "wall_seconds": wall,
        "mean_certainty": float(np.mean([p.scores["certainty"] for p in pairs])) if pairs else float("nan"),
        "mean_entropy": float(np.mean([p.scores["entropy"] for p in pairs])) if pairs else float("nan"),
        "candidate_pairs": len(arm.last.get("candidates", [])),
        "decisive_labels": len(decisive),
        "oracle_disagreement": float(np.mean(disagree)) if disagree else float("nan"),
        "stages": ctx.stats.as_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the random tiny GPT-2 instead of SmolLM2-135M")
    ap.add_argument("--labels", type=int, default=8, help="pairs acquired (n)")
    ap.add_argument("--n-samples", type=int, default=4, help="N (paper: 8)")
    ap.add_argument("--k", type=int, default=4, help="prompt over-sampling (paper IMDB: 8)")
    ap.add_argument("--f", type=int, default=8, help="hybrid pair over-generation (paper IMDB: 32)")
    ap.add_argument("--prompts-per-label", type=int, default=2, help="hybrid_reuse p")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--min-new-tokens", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.2)
    ap.add_argument("--warmup-pairs", type=int, default=8)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--warmup-lr", type=float, default=5e-3)
    ap.add_argument("--random-b", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per generate() call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = str(tiny_dir() if args.tiny else smollm2_dir())
    policy = Policy(PolicyConfig(name_or_path=model, device="cpu"), DPOConfig(beta=args.beta), seed=args.seed)
    oracle, oracle_name = load_oracle()
    n = args.labels
    pool_size = n * max(args.f * args.k, args.prompts_per_label * args.k)
    pool = load_prompts(policy, pool_size, 0)
    warm = load_prompts(policy, args.warmup_pairs, pool_size)

    t = time.perf_counter()
    wctx = AcquisitionContext(generator=HFGenerator(HFGeneratorConfig(batch_size=args.batch_size), policy),
                              reference_logprobs=ReferenceScorer(policy), rng=np.random.default_rng(args.seed + 1),
                              beta=args.beta, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)
    moved = move_policy(policy, oracle, warm, wctx, args)
    move_s = time.perf_counter() - t
    print(f"[policy] moved in {move_s:.0f} s: {moved}", flush=True)

    arms = {
        "hybrid": HybridAcquisition(HybridConfig(n_samples=args.n_samples, k=args.k, f=args.f)),
        "hybrid_reuse": HybridReuseAcquisition(HybridReuseConfig(n_samples=args.n_samples, k=args.k,
                                                                 prompts_per_label=args.prompts_per_label)),
    }
    res = {name: run_arm(arm, policy, pool, args, oracle) for name, arm in arms.items()}

    print(f"\nmodel: {'tiny random GPT-2' if args.tiny else 'SmolLM2-135M-Instruct'} (CPU, {args.threads} threads)")
    print(f"settings: n={n} labels, N={args.n_samples}, k={args.k}, f={args.f}, p={args.prompts_per_label}, "
          f"beta={args.beta}, completions {args.min_new_tokens}-{args.max_new_tokens} tokens, pool {pool_size} prompts")
    print(f"policy moved off the reference first ({move_s:.0f} s): {moved}")
    print(f"oracle: {oracle_name}\n")
    rows = [("pairs acquired", "pairs", "{:.0f}"),
            ("generations / label", "generations_per_label", "{:.1f}"),
            ("tokens generated / label", "tokens_per_label", "{:.0f}"),
            ("sequences scored / label", "sequences_scored_per_label", "{:.1f}"),
            ("acquisition s / label", "seconds_per_label", "{:.2f}"),
            ("candidate pairs scored", "candidate_pairs", "{:.0f}"),
            ("mean |r_a - r_b| (kept)", "mean_certainty", "{:.4f}"),
            ("mean entropy, nats (kept)", "mean_entropy", "{:.2f}"),
            ("decisive oracle labels", "decisive_labels", "{:.0f}"),
            ("oracle disagrees w/ policy", "oracle_disagreement", "{:.2f}")]
    print(f"{'':30s}{'hybrid':>14s}{'hybrid_reuse':>14s}")
    for title, key, fmt in rows:
        print(f"{title:30s}{fmt.format(res['hybrid'][key]):>14s}{fmt.format(res['hybrid_reuse'][key]):>14s}")
    ratio = res["hybrid_reuse"]["generations_per_label"] / res["hybrid"]["generations_per_label"]
    print(f"\nhybrid_reuse / hybrid generations per label: {ratio:.3f} (target <= 0.25: "
          f"{'met' if ratio <= 0.25 else 'NOT met'})")
    print(f"at the paper's IMDB settings (N=8, k=8, f=32, p=4) the same formulas give "
          f"{8 * 8 * 32 + 2 * 32} vs {4 * 8 * 8} generations per label ({4 * 8 * 8 / (8 * 8 * 32 + 64):.3f})")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "moved": moved,
                                         "oracle": oracle_name, "results": res}, indent=2, default=str))


if __name__ == "__main__":
    main()
