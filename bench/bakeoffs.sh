#!/usr/bin/env bash
# The four recorded comparisons (docs/benchmarks.md): the default plan (30 min budget, 3 seeds)
# on sst2, trec, banking77 and e2e, two at a time with one core each (OMP_NUM_THREADS=1), then
# a screenshot of each report. Usage: bench/bakeoffs.sh [OUT_ROOT]   (needs ../shared beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bakeoffs}
DATA=../shared/datasets
mkdir -p "$OUT"
run() {  # run NAME: one comparison on one core, its wall time in OUT/NAME.time
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false /usr/bin/env time -f "%e s" \
    -o "$OUT/$1.time" .venv/bin/tailor compare --train "$DATA/$1/train.jsonl" \
    --test "$DATA/$1/test.jsonl" --out "$OUT/$1" > "$OUT/$1.log" 2> "$OUT/$1.err"
}
for pair in "sst2 trec" "banking77 e2e"; do
  set -- $pair
  run "$1" & run "$2" & wait
done
for name in sst2 trec banking77 e2e; do
  .venv/bin/tailor recommend "$OUT/$name" --screenshot "$OUT/$name.png" > /dev/null
  echo "$name: $(cat "$OUT/$name.time")"
done
