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
mkdir -p "$HERE/paired"; rm -rf "$HERE/paired"/* "$HERE/report"
for d in "$HERE"/runs/*-s* "$HERE"/../apl_vs_random/runs/random-s*; do
  n=$(basename "$d"); [ "$n" = random-s0 ] && [ "$d" != "${d#$HERE/runs}" ] && continue  # the check run stays out
  ln -s "$d" "$HERE/paired/$n"
done
cd "$HERE" && "$VENV/bin/rlaif" report paired --out report
