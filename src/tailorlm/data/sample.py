"""k-shot samples and stratified splits, reproducible from a seed.

    train8 = k_per_class(train, k=8, seed=0)      # 8 examples of every label, shuffled
    fit, val = split(train8, 0.25, seed=0)        # a quarter of each label for validation

Both draw from `numpy.random.default_rng(seed)` and read examples in file order, so the same file
and seed give the same rows on every machine. Classes are visited in the task's label order.
"""

from __future__ import annotations

import logging

import numpy as np

from tailorlm.data.task import Example, Task
from tailorlm.errors import TailorError

log = logging.getLogger(__name__)


def k_per_class(task: Task, k: int, seed: int) -> Task:
    """k examples of every label (k in all for a generation task), in a seeded random order.

    A label with fewer than k examples contributes all of them; `short_classes(task, k)` says
    which, and a warning is logged, so a report can show that the sample is unbalanced.
    """
    _check_count(k, "k")
    rng = np.random.default_rng(seed)
    if task.kind == "generation":
        take = rng.choice(len(task), size=min(k, len(task)), replace=False)
        return task.with_examples([task.examples[i] for i in take])
    chosen: list[Example] = []
    for label, idx in _by_label(task).items():
        if len(idx) > k:
            idx = [idx[i] for i in sorted(rng.choice(len(idx), size=k, replace=False))]
        chosen.extend(task.examples[i] for i in idx)
    short = short_classes(task, k)
    if short:
        log.warning("%s: fewer than k=%d examples for %s; using all of them", task.name, k,
                    ", ".join(f"{lab!r} ({n})" for lab, n in short.items()))
    return task.with_examples([chosen[i] for i in rng.permutation(len(chosen))])


def short_classes(task: Task, k: int) -> dict[str, int]:
    """Labels with fewer than k examples in `task`, and how many they have (zero included)."""
    if task.kind != "classification":
        return {}
    return {lab: len(idx) for lab, idx in _by_label(task).items() if len(idx) < k}


def split(task: Task, size: float | int, seed: int) -> tuple[Task, Task]:
    """Split `task` into (a, b), where b holds `size` of it: a fraction in (0, 1) or a count.

    Classification splits are stratified: each label gives b its share (largest-remainder
    rounding), and a label with at least 2 examples keeps at least one on each side, so the
    size of b can differ slightly from the one asked. A label with a single example stays in a.
    """
    n = len(task)
    if n < 2:
        raise TailorError(f"{task.name}: cannot split {n} example(s) in two; give at least 2")
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TailorError(f"split size must be a fraction or a count, not {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size < 1.0:
            raise TailorError(f"split fraction must be between 0 and 1 (exclusive), not {size}")
        n_b = min(max(round(size * n), 1), n - 1)
    else:
        if not 1 <= size < n:
            raise TailorError(f"split count must be from 1 to {n - 1} for {n} examples, not {size}")
        n_b = int(size)
    rng = np.random.default_rng(seed)
    if task.kind == "generation":
        order = rng.permutation(n)
        b_idx, a_idx = list(order[:n_b]), list(order[n_b:])
    else:
        groups = list(_by_label(task).values())
        a_idx, b_idx = [], []
        for idx, q in zip(groups, _quotas([len(g) for g in groups], n_b)):
            perm = [idx[i] for i in rng.permutation(len(idx))]
            b_idx += perm[:q]
            a_idx += perm[q:]
        a_idx = [a_idx[i] for i in rng.permutation(len(a_idx))]
        b_idx = [b_idx[i] for i in rng.permutation(len(b_idx))]
    return (task.with_examples([task.examples[i] for i in a_idx]),
            task.with_examples([task.examples[i] for i in b_idx]))


def _quotas(counts: list[int], n_b: int) -> list[int]:
    """How many of each class go to b: proportional shares of n_b, then each class with >= 2
    examples clamped to keep at least one on each side."""
    total = sum(counts)
    raw = [n_b * c / total for c in counts]
    quotas = [int(r) for r in raw]
    by_remainder = sorted(range(len(counts)), key=lambda i: (quotas[i] - raw[i], i))
    for i in by_remainder[: n_b - sum(quotas)]:
        quotas[i] += 1
    return [min(max(q, 1), c - 1) if c >= 2 else 0 for q, c in zip(quotas, counts)]


def _by_label(task: Task) -> dict[str, list[int]]:
    """Example indices per label, labels in the task's order, indices in file order."""
    groups: dict[str, list[int]] = {lab: [] for lab in task.labels}
    for i, e in enumerate(task.examples):
        groups.setdefault(e.label, []).append(i)
    return groups


def _check_count(k, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TailorError(f"{what} must be a whole number of at least 1, not {k!r}")
