#!/usr/bin/env bash
# Issue 16's comparison: the epistemic arms (ensemble_uncertainty, thompson) on the project's
# experiment (`+experiment=apl_vs_random`, seeds 0-4), paired by seed with random. Random's runs
# are docs/results/apl_vs_random/runs/random-s*; random seed 0 is re-run here first, at this
# commit, to show that pairing with them is valid (same preferences.jsonl, same win-rates).
# The same as
#   rlaif run -m +experiment=apl_vs_random seed=0,1,2,3,4 +cpu_arm=ensemble_uncertainty,thompson
# but one process per run, seed-major, resumable (a finished run is skipped, a cut one resumed).
#
#   COMMIT=<id> OUT=/some/dir docs/results/beyond_paper/run.sh
set -u
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
COMMIT=${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)}
OUT=${OUT:-$HOME/rlaif-sweeps/beyond_paper}
SRC="$OUT.src-$COMMIT"
VENV=$(cd "$ROOT" && scripts/env.sh)
[ -d "$SRC" ] || git -C "$ROOT" worktree add --detach "$SRC" "$COMMIT" >/dev/null
cd "$SRC"
export PYTHONPATH="$SRC"
mkdir -p "$OUT"
one() {  # arm seed
  local d="$OUT/$1-s$2"
  [ -f "$d/summary.json" ] && return
  [ -f "$ROOT/docs/results/beyond_paper/runs/$1-s$2/summary.json" ] && return  # collected already
  echo "$(date +%T) start $1 s$2 ($COMMIT)" >> "$OUT/progress.log"
  if [ -f "$d/state/state.json" ]; then resume="resume=$d"; else resume=; fi
  if [ -n "$resume" ]; then
    "$VENV/bin/python" -m rlaif run $resume > "$d.log" 2>&1
  else
    "$VENV/bin/python" -m rlaif run +experiment=apl_vs_random +cpu_arm=$1 seed=$2 hydra.run.dir="$d" > "$d.log" 2>&1
  fi
  echo "$(date +%T) end $1 s$2 rc=$?" >> "$OUT/progress.log"
}
one random 0   # the pairing check
for seed in 0 1 2 3 4; do
  for arm in ensemble_uncertainty thompson; do one $arm $seed; done
done
