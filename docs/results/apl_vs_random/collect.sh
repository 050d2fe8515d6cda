#!/usr/bin/env bash
# Copy the small files of every finished run of OUT into runs/ here (what `rlaif report` reads, plus
# the labelled pairs), then rebuild the report from them: report/ (report.md, PNGs, CSVs).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HOME/rlaif-sweeps/apl_vs_random}
VENV=$(cd "$HERE/../../.." && scripts/env.sh)
ARMS="random certainty hybrid entropy"
for seed in 0 1 2 3 4; do   # whole seeds only: every arm of the report has the same seeds
  done_all=1
  for arm in $ARMS; do [ -f "$OUT/$arm-s$seed/summary.json" ] || [ -f "$HERE/runs/$arm-s$seed/summary.json" ] || done_all=0; done
  [ "$done_all" = 1 ] || continue
  for arm in $ARMS; do
    d="$OUT/$arm-s$seed"
    [ -f "$d/summary.json" ] || continue
    mkdir -p "$HERE/runs/$arm-s$seed"
    cp "$d"/{summary.json,metrics.jsonl,config.yaml,config.json,preferences.jsonl} "$HERE/runs/$arm-s$seed/"
  done
done
rm -rf "$HERE/report"
cd "$HERE" && "$VENV/bin/rlaif" report runs --out report   # relative paths in the report
