"""Scoring in bfloat16 against float32: the same adapter, the same test rows, both ways.

Whether the comparison's inference (evaluation, sensitivity, the prompt search's candidates) can
run in bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX) without moving a score:
one prompt_template adapter (its template chosen on K per class rows), then the test rows scored
in float32 and under bfloat16 autocast (weights stay float32), one after the other, each timed.

    TAILORLM_DATASETS=../shared/datasets .venv/bin/python bench/bf16_inference.py \
        --tasks sst2,trec,banking77 --n-test 400

Prints one JSON line per task: seconds and accuracy each way, the share of rows whose predicted
label agrees, and the largest difference of a label's log-probability between the two.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from common import backend, task
from tailorlm.data.sample import k_per_class
from tailorlm.engine.evaluate import label_scores
from tailorlm.methods import get_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="sst2,trec")
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    be = backend()
    for name in args.tasks.split(","):
        full, _ = task(name, "train")
        _, test = task(name, "test", n=args.n_test)
        spec = get_method("prompt_template")
        adapter = spec.fit(be, k_per_class(full, args.k, 0), None, spec.config.from_dict({}),
                           seed=0)
        gold = np.array([test.labels.index(e.label) for e in test.examples])
        label_scores(be, adapter, test.with_examples(test.examples[:16]))  # warm-up
        out = {"task": name, "n_test": len(test.examples)}
        scores = {}
        for mode in ("float32", "bf16_autocast"):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "float32"):
                scores[mode] = label_scores(be, adapter, test)
            out[f"{mode}_s"] = round(time.perf_counter() - start, 2)
            out[f"{mode}_acc"] = round(float((scores[mode].argmax(1) == gold).mean()), 4)
        a, b = scores["float32"], scores["bf16_autocast"]
        out["agree"] = round(float((a.argmax(1) == b.argmax(1)).mean()), 4)
        out["max_abs_logprob_diff"] = round(float(np.abs(a - b).max()), 4)
        out["speedup"] = round(out["float32_s"] / out["bf16_autocast_s"], 2)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
