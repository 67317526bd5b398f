"""Own peak memory of a run: lora+soft_prompt alone, and right after `full` in the same process.

    python bench/peak_memory.py alone        # one process
    python bench/peak_memory.py after_full   # another: full first, then the hybrid

Prints each results row's peak_rss_mb (the run's own: peak minus rss_before_mb), rss_before_mb,
fit seconds, and latency p50/p95 (ms, one query at a time) and queries/s at batch 16.
k=1 per class of the demo task, one epoch, 20 test rows: a memory check, not a quality one.
"""

import sys

from tailorlm.compare.runner import Run, run_comparison
from tailorlm.data.load import load_builtin_task
from tailorlm.models import load_backend

order = sys.argv[1] if len(sys.argv) > 1 else "alone"
backend = load_backend("smollm2-135m")
train, test = load_builtin_task("support_routing")
test = test.with_examples(test.examples[:20])
fast = {"epochs": 1, "batch_size": 8}
hybrid = Run("lora+soft_prompt", {"weight": fast, "input": fast}, k=1)
runs = [Run("full", fast, k=1), hybrid] if order == "after_full" else [hybrid]
for r in run_comparison(backend, train, test, runs, f"runs/peak_memory-{order}"):
    print(f"{order} {r['method']}: peak_rss_mb {r['peak_rss_mb']:.0f}, rss_before_mb "
          f"{r['rss_before_mb']:.0f}, fit {r['fit_seconds']:.1f} s, latency p50 "
          f"{r['latency_ms_p50']:.0f} ms p95 {r['latency_ms_p95']:.0f} ms, "
          f"{r['queries_per_second']:.2f} queries/s")
