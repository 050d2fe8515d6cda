#!/usr/bin/env bash
# One prepared call on a lent GPU machine (no internet there): what exists, then the generation
# benchmark on CUDA. Run from the repo root with the SmolLM2 config + tokenizer (no weights, 3.4 MB)
# carried in .smollm2-config/ (copied from $RLAIF_CACHE/models/smollm2-135m-instruct, listed in
# .git/info/exclude): the model gets random weights of the same architecture there, which costs the
# same per token (completion length is fixed: min_new_tokens = max_new_tokens).
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".smollm2-config"], timeout_s=420)
#
# Optional: official vllm wheels carried in .whl/ are installed first (they are ~340 MB for vllm
# 0.33 alone, over the 64 MiB a call may carry, so in practice the vLLM side needs an image with it).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
MODEL="${MODEL:-.smollm2-config}"
PROMPTS="${PROMPTS:-512}"

{
  echo "== machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  echo "python: $(command -v python3) $(python3 -V 2>&1)"
  python3 - <<'EOF'
import importlib, importlib.util
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("transformers", "peft", "trl", "vllm", "flashinfer", "xformers", "hydra", "omegaconf"):
    spec = importlib.util.find_spec(name)
    if spec is None:
        print(f"{name}: NOT INSTALLED")
        continue
    try:
        m = importlib.import_module(name)
        print(f"{name}: {getattr(m, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{name}: installed but import fails: {type(e).__name__}: {e}")
EOF
  echo "pip vllm: $(python3 -m pip show vllm 2>&1 | head -2 | tr '\n' ' ')"
  echo "local wheels named vllm: $(ls /opt/wheels /root/wheels 2>/dev/null | grep -i vllm || echo none)"
} 2>&1 | tee "$OUT/env.txt"

if ls .whl/*.whl >/dev/null 2>&1; then
  echo "== installing carried wheels" | tee -a "$OUT/env.txt"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
  python3 -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tee -a "$OUT/env.txt"
fi

echo "== benchmark (CUDA)"
set -o pipefail
python3 benchmarks/bench_generation.py --model "$MODEL" --random-init --prompts "$PROMPTS" --n 8 --new-tokens 24 \
  --sync-rounds 3 --json "$OUT/bench.json" 2>&1 | grep -v -E "Loading weights|Writing model shards" | tee "$OUT/bench.log"
echo "bench exit: $?"
