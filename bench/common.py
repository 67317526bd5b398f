"""Shared setup for the benchmarks: the built-in model, shared datasets, timing."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import torch

from tailorlm.data.load import load_task
from tailorlm.models import load_backend

DATASETS = Path(os.environ.get("TAILORLM_DATASETS",
                               Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def backend(dtype: str = "float32"):
    torch.set_num_threads(os.cpu_count() or 1)
    return load_backend("smollm2-135m", dtype=dtype)


def task(name: str, split: str, n: int | None = None, seed: int = 0):
    train = load_task(DATASETS / name / "train.jsonl")
    t = load_task(DATASETS / name / f"{split}.jsonl", labels=train.labels,
                  verbalizer=train.verbalizer) if split != "train" else train
    if n is not None:
        rows = list(t.examples)
        random.Random(seed).shuffle(rows)
        t = t.with_examples(rows[:n])
    return train, t


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
