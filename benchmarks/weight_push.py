"""Weight push per round, side by side in one run (SmolLM2-135M by default):

1. in-process engine (generator=vllm ``sync``): save the merged weights -> ``reload_weights`` ->
   reset the prefix cache;
2. vLLM server, LoRA hot-load (generator=vllm_server, weight_sync=lora): save the adapter ->
   ``/v1/load_lora_adapter`` under a versioned name -> unload the previous version;
3. vLLM server, full weights (generator=vllm_server, weight_sync=full): save the merged weights ->
   ``/collective_rpc reload_weights`` -> ``/reset_prefix_cache`` -> ``/update_weight_version``.

Each round changes the LoRA B matrices (a stand-in for DPO) and pushes; a short sample after each
push checks the served log-probs against HF. Prints seconds per push, ratios, bytes moved, and the
on-paper figure for a 7B model over NCCL (no files, no RPC per parameter) from the bytes moved at
an assumed bandwidth (``--nccl-gbps``).

    python benchmarks/weight_push.py                   # SmolLM2-135M, CPU (~4 min)
    python benchmarks/weight_push.py --rounds 5 --model DIR

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = ["This movie was one of the worst films I have ever seen, and", "After twenty years this is still my",
         "The acting in this picture is uneven: the lead is wonderful while", "Nothing about the plot makes sense"]

# Llama-2-7B shapes: hidden 4096, MLP 11008, 32 layers, vocab 32000
L7B = dict(hidden=4096, inter=11008, layers=32, vocab=32000, params=6.74e9)


def log(msg: str) -> None:
    print(msg, flush=True)


def change_weights(policy, seed: int, scale: float = 0.01) -> None:
    """A stand-in for a DPO round: new LoRA B matrices, version bumped."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_((torch.randn(p.shape, generator=g) * scale).to(p.device, p.dtype))
    policy.version += 1


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*.safetensors"))


def check(gen, policy, prompts) -> float:
    """Largest |served - HF| per-token log-prob over a few samples of the current version."""
    from rlaif.generator.base import SamplingParams
    from rlaif.models.scoring import sequence_logprobs

    cs = [c for g in gen.sample(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3)) for c in g]
    with policy.current() as model:
        hf = sequence_logprobs(model, [(c.prompt.token_ids, c.token_ids) for c in cs], pad_id=policy.pad_id,
                               per_token=True)
    return max(abs(a - b) for c, h in zip(cs, hf) for a, b in zip(c.token_logprobs, h))


def rounds(gen, policy, prompts, n: int, seed0: int) -> tuple[list[float], float]:
    times, err = [], 0.0
    for r in range(n):
        change_weights(policy, seed0 + r)
        times.append(gen.sync())
        err = max(err, check(gen, policy, prompts))
    return times, err


def in_process(policy, prompts, n: int) -> dict:
    from rlaif.generator.vllm import VLLMGenerator, VLLMGeneratorConfig

    gen = VLLMGenerator(VLLMGeneratorConfig(max_model_len=256), policy)
    try:
        gen.start()
        gen.sync()
        times, err = rounds(gen, policy, prompts, n, 100)
        return dict(times=times, err=err, bytes=dir_bytes(gen._sync_dir / "policy"), start=gen.start_seconds)
    finally:
        gen.close()


def servers(policy, prompts, n: int) -> tuple[dict, dict]:
    from rlaif.generator.vllm_server import VLLMServerGenerator, VLLMServerGeneratorConfig

    lora = VLLMServerGenerator(VLLMServerGeneratorConfig(launch=1, max_model_len=256, weight_sync="lora"), policy)
    try:
        lora.start()
        lora.sync()
        lt, lerr = rounds(lora, policy, prompts, n, 200)
        res_l = dict(times=lt, err=lerr, bytes=dir_bytes(lora._pushed), start=lora.start_seconds)
        # the same server, pushed full merged weights by a generator that knows only its URL
        full = VLLMServerGenerator(VLLMServerGeneratorConfig(urls=[lora.pool.servers[0].url], weight_sync="full",
                                                             score_serial=True), policy)
        try:
            full.start()
            full.sync()
            ft, ferr = rounds(full, policy, prompts, n, 300)
            res_f = dict(times=ft, err=ferr, bytes=dir_bytes(full._pushed), start=None)
        finally:
            full.close()
    finally:
        lora.close()
    return res_l, res_f


def lora_params_7b(r: int) -> float:
    h, i, layers = L7B["hidden"], L7B["inter"], L7B["layers"]
    per_layer = 4 * r * (h + h) + 2 * r * (h + i) + r * (i + h)  # q k v o, gate up, down
    return per_layer * layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nccl-gbps", type=float, default=100.0,
                    help="assumed effective NCCL broadcast bandwidth, GB/s (NVLink within a node)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from rlaif.assets import resolve_model
    from rlaif.models.policy import Policy
    from rlaif.trainer.dpo_config import DPOConfig
    from rlaif.types import Prompt

    torch.set_num_threads(2)
    model = resolve_model(args.model) if args.model in ("smollm2", "tiny") else args.model
    policy = Policy(SimpleNamespace(name_or_path=model, dtype="float32", device="cpu"), DPOConfig(lora=True), seed=0)
    prompts = [Prompt(f"p{i}", t, tuple(policy.tokenizer(t)["input_ids"])) for i, t in enumerate(TEXTS)]
    log(f"== weight push per round: {model} (float32, LoRA r={policy.tcfg.lora_r}), {args.rounds} rounds, "
        f"cpu x{len(os.sched_getaffinity(0))}")
    res = {"in-process reload (generator=vllm)": in_process(policy, prompts, args.rounds)}
    res["server LoRA hot-load"], res["server full-weight reload"] = servers(policy, prompts, args.rounds)
    report(res, policy, args)


def report(res: dict, policy, args) -> None:
    base = statistics.median(res["in-process reload (generator=vllm)"]["times"])
    log(f"{'path':36s} {'median s':>9s} {'rounds (s)':>24s} {'vs in-process':>13s} {'MB moved':>9s} {'max |dlogp|':>11s}")
    for name, r in res.items():
        med = statistics.median(r["times"])
        log(f"{name:36s} {med:9.3f} {' '.join(f'{t:.3f}' for t in r['times']):>24s} {med / base:12.2f}x "
            f"{r['bytes'] / 1e6:9.1f} {r['err']:11.1e}")
    n_params = sum(p.numel() for p in policy.base.parameters())
    log(f"(SmolLM2 has {n_params / 1e6:.0f}M parameters; the disk paths write and re-read every byte above)")
    bw = args.nccl_gbps * 1e9
    full_b = L7B["params"] * 2  # bfloat16
    lora_b = lora_params_7b(int(policy.tcfg.lora_r)) * 2
    log(f"on paper, 7B (Llama-2 shapes, bf16) over NCCL at an assumed {args.nccl_gbps:.0f} GB/s effective broadcast "
        f"(NVLink in a node; ~40 GB/s for 400 Gb/s InfiniBand across nodes):")
    log(f"  full weights {full_b / 1e9:.1f} GB -> {full_b / bw:.2f} s on the wire "
        f"(+ per-bucket RPC overhead; TRL reports ~2.3 s for 32B, ~0.15 s for 0.5B)")
    log(f"  LoRA r={policy.tcfg.lora_r} adapter {lora_b / 1e6:.0f} MB -> {lora_b / bw * 1e3:.1f} ms on the wire; "
        f"as a file (this CPU path) it is {full_b / lora_b:.0f}x fewer bytes than the merged model")


if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    main()
