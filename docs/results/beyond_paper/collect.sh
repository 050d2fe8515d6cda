#!/usr/bin/env bash
# Copy the small files of every finished run of OUT into runs/ here, then build the report of the
# new arms against random (random's runs from docs/results/apl_vs_random, paired by seed).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HOME/rlaif-sweeps/beyond_paper}
VENV=$(cd "$HERE/../../.." && scripts/env.sh)
for d in "$OUT"/*-s*; do
  [ -f "$d/summary.json" ] || continue
  n=$(basename "$d"); mkdir -p "$HERE/runs/$n"
  cp "$d"/{summary.json,metrics.jsonl,config.yaml,config.json,preferences.jsonl} "$HERE/runs/$n/"
done
# the new arms' runs and random's committed runs (seed 0's check run here stays out of the report)
rm -rf "$HERE/paired" "$HERE/report"
cd "$HERE" && "$VENV/bin/rlaif" report runs/ensemble_uncertainty-s* runs/thompson-s* ../apl_vs_random/runs/random-s* \
  --out report
