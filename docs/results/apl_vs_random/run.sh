#!/usr/bin/env bash
# The 5-seed comparison of docs/results/apl_vs_random: `+experiment=apl_vs_random` with the arms
# random, certainty, hybrid and entropy x seeds 0-4, one `rlaif run` per (arm, seed), seed-major so
# that a partial sweep is balanced across arms. Resumable: a finished run (summary.json) is skipped,
# a cut one is resumed (resume=). The same as
#   rlaif run -m +experiment=apl_vs_random seed=0,1,2,3,4 +cpu_arm=random,certainty,hybrid,entropy
# but one process per run, so a crash or a stop loses at most the run in progress.
#
#   COMMIT=<id> OUT=/some/dir docs/results/apl_vs_random/run.sh
#
# COMMIT (default: HEAD) is checked out into a worktree beside OUT, so edits to this checkout never
# leak into a sweep that is running; the runs' small files are then copied here by collect.sh.
set -u
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
COMMIT=${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)}
OUT=${OUT:-$HOME/rlaif-sweeps/apl_vs_random}
SRC="$OUT.src-$COMMIT"
VENV=$(cd "$ROOT" && scripts/env.sh)
[ -d "$SRC" ] || git -C "$ROOT" worktree add --detach "$SRC" "$COMMIT" >/dev/null
cd "$SRC"
export PYTHONPATH="$SRC"
mkdir -p "$OUT"
for seed in 0 1 2 3 4; do
  for arm in random certainty hybrid entropy; do
    d="$OUT/$arm-s$seed"
    [ -f "$d/summary.json" ] && continue
    [ -f "$ROOT/docs/results/apl_vs_random/runs/$arm-s$seed/summary.json" ] && continue  # collected already
    echo "$(date +%T) start $arm s$seed ($COMMIT)" >> "$OUT/progress.log"
    if [ -f "$d/state/state.json" ]; then resume="resume=$d"; else resume=; fi
    "$VENV/bin/python" -m rlaif run +experiment=apl_vs_random +cpu_arm=$arm seed=$seed $resume \
      hydra.run.dir="$d" > "$d.log" 2>&1
    echo "$(date +%T) end $arm s$seed rc=$?" >> "$OUT/progress.log"
  done
done
