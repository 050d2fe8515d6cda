#!/usr/bin/env bash
# One prepared call on a lent GPU machine (no internet there, no trl/datasets/hydra/vllm installed):
#   1. env:   the machine, the installed versions, the carried wheels installed to /tmp/site;
#   2. e2e:   `rlaif run` end to end on CUDA in bf16 -- SmolLM2-135M's architecture and tokenizer
#             with random weights (no weights travel), generator=hf, a JSONL prompt file written
#             here, the simulated (keyword) judge, trainer=dpo (full fine-tuning, reset each round).
#             It records the policy's and TRL's dtype/device, the share of weights each round's
#             training changed, seconds per round, and checks that metrics.jsonl is finite;
#   3. bench: benchmarks/bench_generation.py (HF sampling throughput; vLLM too where importable).
# Each step runs under `timeout` and does not depend on the others passing. Logs, metrics.jsonl and
# summary.json go to $OUT (at most 8 files come back from the device tool).
#
# Prepare once, here (both folders are listed in .git/info/exclude):
#   .gpu/whl/      trl 1.16.0, datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19, hydra-core 1.3.8,
#                  omegaconf 2.3.1, antlr4-python3-runtime 4.9.3 (built with `pip wheel`: sdist
#                  only), tenacity 9.2.1 -- `pip download --no-deps --only-binary=:all:
#                  --python-version 3.12 ...` as /work/.library/device/README.md describes
#   .gpu/smollm2/  config + tokenizer of $RLAIF_CACHE/models/smollm2-135m-instruct (no weights, 3.4 MB)
# Then:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=480)
# A local dry run of the same steps on the CPU (small settings, the project venv, no install):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 GPU_CHECK_INSTALL=0 PYTHON=$VENV/bin/python bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export OUT="${OUT:-/tmp/gpu_check_out}"
PY="${PYTHON:-python3}"
CARRY="${CARRY:-.gpu}"
export GC_DEVICE="${GPU_CHECK_DEVICE:-cuda}" GC_DTYPE="${GPU_CHECK_DTYPE:-bfloat16}" GC_SMALL="${GPU_CHECK_SMALL:-0}"
export GC_WORK="${GPU_CHECK_WORK:-/tmp/gpu_check}" GC_MODEL_SRC="${GPU_CHECK_MODEL:-$CARRY/smollm2}"
export RLAIF_CACHE="${RLAIF_CACHE:-$GC_WORK/cache}"
mkdir -p "$OUT" "$GC_WORK"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

# step NAME LIMIT_S LOG CMD...: run CMD under timeout, tee to $OUT/LOG, record rc and seconds
step() {
  local name=$1 limit=$2 logf=$3 t0 rc
  shift 3
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/$logf"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$logf"
  rc=${PIPESTATUS[0]}
  echo "$name: rc=$rc in $(( $(date +%s) - t0 )) s" | tee -a "$SUMMARY"
  return 0
}

# -- 1. environment and carried wheels ---------------------------------------------------------------
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${GPU_CHECK_INSTALL:-1}" = 1 ] && ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
  step install 60 env.log "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$CARRY"/whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

STEPS=" ${GPU_CHECK_STEPS:-env e2e bench} "
export PY
env_report() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  echo "python: $(command -v "$PY") ($("$PY" -V 2>&1)); cpus $(nproc); PYTHONPATH=$PYTHONPATH"
  "$PY" - <<'EOF'
import importlib, importlib.metadata as md
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
      "bf16 supported", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
for dist, mod in [("transformers", "transformers"), ("trl", "trl"), ("datasets", "datasets"), ("peft", "peft"),
                  ("accelerate", "accelerate"), ("hydra-core", "hydra"), ("omegaconf", "omegaconf"),
                  ("antlr4-python3-runtime", "antlr4"), ("tenacity", "tenacity"), ("dill", "dill"),
                  ("multiprocess", "multiprocess"), ("pyarrow", "pyarrow"), ("fsspec", "fsspec"),
                  ("huggingface-hub", "huggingface_hub"), ("tokenizers", "tokenizers"), ("safetensors", "safetensors"),
                  ("vllm", "vllm")]:
    try:
        v = md.version(dist)
    except md.PackageNotFoundError:
        print(f"{dist}: NOT INSTALLED")
        continue
    try:
        importlib.import_module(mod)
        print(f"{dist}: {v}")
    except Exception as e:  # noqa: BLE001
        print(f"{dist}: {v}, import fails: {type(e).__name__}: {e}")
EOF
}
export -f env_report
[[ $STEPS == *" env "* ]] && step env 60 env.log bash -c env_report

# -- 2. rlaif run end to end ------------------------------------------------------------------------
cat >"$GC_WORK/e2e.py" <<'EOF'
"""rlaif run on GC_DEVICE in GC_DTYPE with a random-init SmolLM2, instrumented (see gpu_check.sh)."""
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

W, OUT = Path(os.environ["GC_WORK"]), Path(os.environ["OUT"])
DEVICE, DTYPE, SMALL = os.environ["GC_DEVICE"], os.environ["GC_DTYPE"], os.environ["GC_SMALL"] == "1"
t_start = time.perf_counter()


def say(*a):
    print("[e2e]", *a, flush=True)


# (a) why full fine-tuning keeps float32 master weights: AdamW at lr 1e-6 on one 1024x1024 layer
torch.manual_seed(0)
w0 = torch.randn(1024, 1024, device=DEVICE) * 0.02
x = torch.randn(64, 1024, device=DEVICE)
for name, p, ac in [("pure bf16 weights", w0.bfloat16().clone(), False),
                    ("fp32 master + bf16 autocast", w0.clone(), True)]:
    p.requires_grad_(True)
    before = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=1e-6, weight_decay=0.0)
    for _ in range(3):
        with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16, enabled=ac):
            loss = (x.to(p.dtype) @ p).float().square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    say(f"precision: {name}: {(p.detach() != before).float().mean().item():.1%} of weights changed "
        "after 3 AdamW steps at lr 1e-6")

# (b) SmolLM2-135M architecture and tokenizer, random weights; a JSONL prompt file
model_dir = W / "smol-random"
if not (model_dir / "model.safetensors").exists():
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = os.environ["GC_MODEL_SRC"]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(src).save_pretrained(model_dir)
say("random-init model:", model_dir)
openers = ["Write a short review of", "Explain in two sentences why people like", "Describe the worst thing about",
           "Give one tip for enjoying", "Summarise the plot of", "What would you change about",
           "Tell a friend whether to watch", "List what is memorable about"]
things = ["the old western", "the new space opera", "the silent comedy", "the detective series", "the musical",
          "the war drama", "the animated film", "the horror sequel", "the documentary on bees", "the heist movie",
          "the romantic comedy", "the courtroom drama", "the road movie", "the period piece", "the spy thriller",
          "the sports biopic", "the monster movie", "the family cartoon", "the noir classic", "the disaster film",
          "the teen comedy", "the epic fantasy", "the nature film", "the cult classic", "the remake",
          "the anthology", "the mockumentary", "the kung fu film", "the ghost story", "the zombie comedy",
          "the political satire", "the chamber piece", "the submarine film", "the jazz biopic", "the time-loop movie",
          "the mountain rescue film", "the chess drama", "the cooking show", "the pirate adventure", "the mystery"]
prompts = [{"prompt": f"{o} {t} (no. {i}):"} for i, (o, t) in enumerate((o, t) for t in things for o in openers)]
pfile = W / "prompts.jsonl"
pfile.write_text("".join(json.dumps(p) + "\n" for p in prompts))
say(f"{len(prompts)} prompts in {pfile}")

# (c) instrumentation: the policy's dtypes, TRL's precision/device, weights changed, time per round
import rlaif.loop as L
import rlaif.models.policy as P
import rlaif.trainer.dpo as D

orig_init = P.Policy.__init__


def policy_init(self, *a, **k):
    orig_init(self, *a, **k)
    say(f"policy: device={self.device} weights={self.base.dtype} compute={self.compute_dtype} lora={self.lora} "
        f"on {next(self.base.parameters()).device}; reference "
        f"{'adapter-disabled base' if self.lora else next(self._ref.parameters()).dtype}")


P.Policy.__init__ = policy_init
orig_cls = D._token_id_trainer_cls
trl_runs = []


def checked_cls():
    base = orig_cls()

    class Checked(base):
        def train(self, *a, **k):
            ps = [p for p in self.model.parameters() if p.requires_grad]
            before = [p.detach().clone() for p in ps]
            out_dtypes = set()  # TRL multiplies by lm_head.weight itself: watch a block's first Linear
            lin = next(m for n, m in self.model.named_modules()
                       if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
            hook = lin.register_forward_hook(lambda m, i, o: out_dtypes.add(str(o.dtype)))
            t = time.perf_counter()
            try:
                out = super().train(*a, **k)
            finally:
                hook.remove()
            changed = sum(int((p.detach() != b).sum()) for p, b in zip(ps, before))
            total = sum(p.numel() for p in ps)
            info = {"trl_bf16": self.args.bf16, "trl_fp16": self.args.fp16,
                    "accelerate_mixed_precision": str(self.accelerator.mixed_precision),
                    "trainable_param_dtypes": sorted({str(p.dtype) for p in ps}),
                    "device": str(ps[0].device), "linear_output_dtypes_in_training": sorted(out_dtypes),
                    "trainable_params": total, "steps": int(out.global_step), "loss": float(out.training_loss),
                    "weights_changed_frac": changed / max(1, total), "train_s": round(time.perf_counter() - t, 2)}
            if torch.cuda.is_available():
                info["cuda_max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            trl_runs.append(info)
            say("TRL trainer:", json.dumps(info))
            return out

    return Checked


D._token_id_trainer_cls = checked_cls
orig_log_round = L._log_round
round_marks = []


def log_round(m):
    round_marks.append(time.perf_counter())
    orig_log_round(m)


L._log_round = log_round

# (d) the run
run_dir = W / "run"
shutil.rmtree(run_dir, ignore_errors=True)
if SMALL:
    sizes = dict(labels=16, per_round=8, epochs=1, batch=8, micro=4, eval=8)
else:
    sizes = dict(labels=192, per_round=64, epochs=10, batch=64, micro=16, eval=64)
overrides = [
    f"policy.name_or_path={model_dir}", f"policy.dtype={DTYPE}", f"policy.device={DEVICE}",
    "generator=hf", "acquisition=random", "oracle=simulated", "trainer=dpo",
    f"trainer.epochs={sizes['epochs']}", f"trainer.batch_size={sizes['batch']}",
    f"trainer.micro_batch_size={sizes['micro']}", "task=jsonl", f"task.path={pfile}",
    f"task.eval_prompts={sizes['eval']}", "task.min_new_tokens=16", "task.max_new_tokens=24",
    f"eval.prompts={sizes['eval']}", f"budget.labels={sizes['labels']}",
    f"budget.labels_per_round={sizes['per_round']}", "save_model=false", f"hydra.run.dir={run_dir}",
]
say("rlaif run", " ".join(overrides))
from rlaif.cli import main as cli

t_run = time.perf_counter()
try:
    cli(["run", *overrides])
    rc = 0
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
run_s = time.perf_counter() - t_run
say(f"rlaif run exit code {rc}, {run_s:.1f} s (this process: {time.perf_counter() - t_start:.1f} s)")

# (e) checks
for f, dest in (("metrics.jsonl", "e2e_metrics.jsonl"), ("summary.json", "e2e_summary.json")):
    if (run_dir / f).exists():
        shutil.copy(run_dir / f, OUT / dest)


def numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


ok = rc == 0
mfile = run_dir / "metrics.jsonl"
rows = [json.loads(line) for line in mfile.read_text().splitlines() if line.strip()] if mfile.exists() else []
bad = [(m["round"], p, v) for m in rows for p, v in numbers(m) if isinstance(v, float) and not math.isfinite(v)]
# a float that is None where a number is expected shows up as missing keys, listed per round
say(f"metrics.jsonl: {len(rows)} rounds; non-finite values: {bad or 'none'}")
ok &= bool(rows) and not bad
prev = t_run
for i, m in enumerate(rows):
    tm = m.get("timings", {})
    wall = round_marks[i] - prev if i < len(round_marks) else float("nan")  # round 1: + model load
    prev = round_marks[i] if i < len(round_marks) else prev
    say(f"round {m['round']}: wall {wall:.1f} s (acquire {tm.get('acquire_s', 0):.1f}, label {tm.get('label_s', 0):.2f}, "
        f"train {tm.get('train_s', 0):.1f}, eval {tm.get('eval_s', 0):.1f}) | labels {m['labels']} decisive "
        f"{m['decisive']} ties {m['ties']} | train loss {m['train'].get('loss')} steps {m['train'].get('steps')} "
        f"reward acc {m['train'].get('reward_accuracy')} margin {m['train'].get('reward_margin')} | "
        f"oracle win-rate {m.get('oracle_winrate')} {m.get('oracle_winrate_ci')}")
if trl_runs:
    ok &= all(r["device"].startswith(DEVICE) for r in trl_runs)
    if DEVICE == "cuda" and DTYPE == "bfloat16":
        ok &= all(r["trl_bf16"] and r["trainable_param_dtypes"] == ["torch.float32"]
                  and "torch.bfloat16" in r["linear_output_dtypes_in_training"] for r in trl_runs)
    ok &= all(r["weights_changed_frac"] > 0.5 for r in trl_runs)
else:
    ok = False
say("E2E", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
[[ $STEPS == *" e2e "* ]] && step e2e 250 e2e.log "$PY" "$GC_WORK/e2e.py"

# -- 3. generation benchmark (HF; vLLM only where it imports) ---------------------------------------
BENCH_ARGS=(--prompts 512 --n 8 --new-tokens 24 --sync-rounds 3 --hybrid-rounds 2)
[ "$GC_SMALL" = 1 ] && BENCH_ARGS=(--prompts 8 --n 2 --new-tokens 8 --sync-rounds 1 --hybrid-rounds 1)
"$PY" -c "import vllm" >/dev/null 2>&1 || BENCH_ARGS+=(--skip-vllm)
[[ $STEPS == *" bench "* ]] && step bench 120 bench.log "$PY" benchmarks/bench_generation.py --model "$GC_MODEL_SRC" --random-init \
  --device "$GC_DEVICE" --hf-dtype "$GC_DTYPE" "${BENCH_ARGS[@]}" --json "$OUT/bench.json"

echo "== summary"
cat "$SUMMARY"
grep -h -E "^\[e2e\] (precision|policy|TRL|round|metrics|E2E|rlaif run exit)" "$OUT/e2e.log" 2>/dev/null
grep -h -E "^(HF   sample|vLLM|RESULT)" "$OUT/bench.log" 2>/dev/null
ls -la "$OUT"
