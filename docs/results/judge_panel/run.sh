#!/usr/bin/env bash
# Issue 16 part 1 at CPU scale: a panel of three free local judges of different families, beside each
# of them alone (bench-oracle's member rows), on 200 IMDB review pairs asked in both orders, against
# the gold sentiment model:
#   local_llm   SmolLM2-135M-Instruct reading prompts/imdb.txt (P(A) from the answer letters)
#   simulated   the keyword judge (10% flips, 5% position bias)
#   fitted_rm   K=8 heads on SmolLM2 features, fitted by `rlaif fit-rm` on the 1,439 decisive labels
#               of the committed certainty / entropy / hybrid runs (their preferences.jsonl)
#
#   docs/results/judge_panel/run.sh        (OUT=<dir> to write elsewhere)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${OUT:-$HERE}
VENV=$(cd "$ROOT" && scripts/env.sh)
cd "$ROOT"
"$VENV/bin/rlaif" fit-rm docs/results/apl_vs_random/runs/{certainty,entropy,hybrid}-s* --out "$OUT/rm" | head -1
"$VENV/bin/rlaif" bench-oracle oracle=panel \
  "oracle.members=[local_llm,simulated,{_target_:rlaif.oracle.fitted_rm.FittedRMOracle,path:'$OUT/rm'}]" \
  oracle.aggregation=mean_p n_pairs=200 out="$OUT/bench"
