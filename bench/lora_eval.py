"""LoRA evaluation merged (`bind`) against PEFT's unmerged layers (`bind_unmerged`): seconds to
bind, memory the binding adds, seconds to score the demo task's test rows, and the largest score
difference. Rounds alternate between the two, so load from other processes falls on both.

    OMP_NUM_THREADS=2 .venv/bin/python bench/lora_eval.py [--n 40] [--rounds 3]

The adapter is a fresh r=8 LoRA on the seven projections with B drawn at random (a fitted B
instead of PEFT's zeros), which costs the same to run as a trained one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tailorlm.data.load import load_builtin_task
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.lora import LoraAdapter, LoraConfig, frozen_view, peft_config, wrap
from tailorlm.methods.templates import resolve
from tailorlm.models import load_backend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    backend = load_backend("smollm2-135m")
    train, test = load_builtin_task("support_routing")
    template = resolve("default", train)
    torch.manual_seed(0)
    model = wrap(frozen_view(backend.model), peft_config(LoraConfig(), backend.identity))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    adapter = LoraAdapter("lora", LoraConfig(), train.with_examples([]), template,
                          identity=backend.identity, peft_model=model, base_id=id(backend.model))
    start = time.perf_counter()
    merged = adapter.bind(backend)
    bind_s = time.perf_counter() - start
    shared = {p.data_ptr() for p in backend.model.parameters()}
    new_bytes = sum(p.numel() * p.element_size() for p in merged.model.parameters()
                    if p.data_ptr() not in shared)
    unmerged = adapter.bind_unmerged(backend)
    rows = test.examples[:args.n]
    prompts = [template.prompt(test, e) for e in rows]
    labels = template.continuations(test)
    times = {"merged": [], "unmerged": []}
    scores = {}
    for _ in range(args.rounds):
        for name, bound in (("unmerged", unmerged), ("merged", merged)):
            start = time.perf_counter()
            scores[name] = score_labels(bound, prompts, labels)
            times[name].append(time.perf_counter() - start)
    print(f"threads {torch.get_num_threads()}, {len(rows)} queries x {len(labels)} labels")
    base_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    print(f"bind merged: {bind_s:.2f} s, {new_bytes / 1e6:.0f} MB of new weights "
          f"(the base: {base_bytes / 1e6:.0f} MB)")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:9s} median {median:.2f} s ({1000 * median / len(rows):.0f} ms/query), "
              f"rounds {', '.join(f'{t:.2f}' for t in ts)}")
    diff = np.abs(np.asarray(scores["merged"]) - np.asarray(scores["unmerged"])).max()
    print(f"max |score merged - unmerged| {diff:.2e}")


if __name__ == "__main__":
    main()
