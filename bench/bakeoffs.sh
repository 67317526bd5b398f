#!/usr/bin/env bash
# The recorded comparisons (docs/benchmarks.md): the default plan (3 seeds, 30 min budget) on
# each dataset in turn, alone on the machine, then a screenshot of each report.
# Usage: bench/bakeoffs.sh OUT_ROOT [NAME[:BUDGET_MINUTES] ...]   (needs ../shared beside it)
#   bench/bakeoffs.sh runs/bakeoffs sst2 trec e2e banking77
# Run again with a larger budget to continue a comparison the budget cut short: OUT/NAME keeps its
# sizes and finished runs; the log and the wall times (NAME.time, one line a call) are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bakeoffs}; shift || true
DATA=../shared/datasets
mkdir -p "$OUT"
[[ $# -gt 0 ]] || set -- sst2 trec e2e banking77
for item in "$@"; do
  name=${item%%:*}; budget=()
  [[ $item == *:* ]] && budget=(--budget-minutes "${item#*:}")
  /usr/bin/env time -a -f "%e s" -o "$OUT/$name.time" .venv/bin/tailor compare \
    --train "$DATA/$name/train.jsonl" --test "$DATA/$name/test.jsonl" "${budget[@]}" \
    --out "$OUT/$name" >> "$OUT/$name.log" 2>> "$OUT/$name.err" || echo "$name failed" >&2
  .venv/bin/tailor recommend "$OUT/$name" --screenshot "$OUT/$name.png" > /dev/null
  echo "$name: $(paste -sd+ "$OUT/$name.time")"
done
