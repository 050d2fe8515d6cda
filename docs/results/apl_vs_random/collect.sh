#!/usr/bin/env bash
# Copy the small files of every finished run of OUT into runs/ here (what `rlaif report` reads, plus
# the labelled pairs), then rebuild the report from them: report/ (report.md, PNGs, CSVs).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HOME/rlaif-sweeps/apl_vs_random}
VENV=$(cd "$HERE/../../.." && scripts/env.sh)
for d in "$OUT"/*/; do
  [ -f "$d/summary.json" ] || continue
  name=$(basename "$d")
  mkdir -p "$HERE/runs/$name"
  cp "$d"/{summary.json,metrics.jsonl,config.yaml,config.json,preferences.jsonl} "$HERE/runs/$name/"
done
rm -rf "$HERE/report"
cd "$HERE" && "$VENV/bin/rlaif" report runs --out report   # relative paths in the report
