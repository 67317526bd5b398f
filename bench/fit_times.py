"""Seconds per fit of each method at the demo's sizes, split into where they go.

    OMP_NUM_THREADS=2 .venv/bin/python bench/fit_times.py [--methods lora,full] [--k 4] [--seed 0]
        [--epochs auto] [--eval]

The demo task (support_routing, 10 labels), k rows per class, the epochs the default plan gives
that many rows (compare/budget.epochs_for) unless --epochs says otherwise. Each fit is timed as a
whole and split into validation passes (the early-stopping judge), checkpoint writes and the rest
(training steps, model copies, encoding). With --eval, the fitted adapter is also evaluated on
the 140 test rows (seconds, score).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager

import torch

from tailorlm.compare.budget import epochs_for
from tailorlm.data.load import load_builtin_task
from tailorlm.data.sample import k_per_class
from tailorlm.engine import checkpoint
from tailorlm.engine.evaluate import evaluate
from tailorlm.methods import get_method
from tailorlm.methods import trainable as trainable_module
from tailorlm.models import load_backend

DEFAULT_PLAN = "prompt_template,few_shot,soft_prompt,lora,full,lora+soft_prompt"


@contextmanager
def timing(module, name: str, totals: dict, key: str):
    """Add the seconds spent in module.name to totals[key] while inside."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=DEFAULT_PLAN)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", default="auto")
    ap.add_argument("--eval", action="store_true")
    args = ap.parse_args()

    backend = load_backend("smollm2-135m")
    train, test = load_builtin_task("support_routing")
    shots = k_per_class(train, args.k, args.seed)
    epochs = epochs_for(len(shots)) if args.epochs == "auto" else int(args.epochs)
    print(f"threads {torch.get_num_threads()}, k={args.k}: {len(shots)} rows, {epochs} epochs, "
          f"seed {args.seed}")
    print("| method | fit s | validation s | checkpoint s | rest s | eval s (140 rows) | score |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        spec = get_method(name)
        values = {}
        if spec.family != "prompt":
            values = ({"epochs": epochs} if spec.family != "hybrid"
                      else {"weight.epochs": epochs, "input.epochs": epochs})
        config = spec.config.from_dict(values)
        totals: dict = {}
        with tempfile.TemporaryDirectory() as work, \
                timing(trainable_module, "validation_score", totals, "validation"), \
                timing(checkpoint, "write", totals, "checkpoint"):
            start = time.perf_counter()
            adapter = spec.fit(backend, shots, None, config, seed=args.seed, work_dir=work)
            fit_s = time.perf_counter() - start
        ev_s, score = "-", "-"
        if args.eval:
            result = evaluate(backend, adapter, test, seed=args.seed)
            ev_s, score = f"{result.seconds:.1f}", f"{result.score:.3f}"
        val, ck = totals.get("validation", 0.0), totals.get("checkpoint", 0.0)
        print(f"| {name} | {fit_s:.1f} | {val:.1f} | {ck:.1f} | {fit_s - val - ck:.1f} | "
              f"{ev_s} | {score} |", flush=True)
        del adapter


if __name__ == "__main__":
    main()
