"""Choosing among prompt candidates on validation data (templates, demonstration sets, calibration).

Two stages, because a few dozen validation examples are a noisy judge:

  1. candidates (templates, demonstration sets) are ranked by the mean log-probability of the gold
     label, normalised over the label set, on the raw scores: a proper scoring rule that uses the
     model's confidence, not only the arg-max, so it varies less than accuracy on small sets;
  2. the winner is kept with or without contextual calibration, by validation accuracy.

Judging both at once lets calibration (a free bias per label: with two labels, a threshold fitted
to the validation set) rescue a weak template by overfitting. On sst2 with 32 examples the joint
choice took "Input/Category" + calibration (test 0.775); the staged one "Text/Sentiment" (0.815).
Ties keep the earlier candidate. Generation candidates are ranked by the task's metric.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.sample import split
from tailorlm.data.task import Task
from tailorlm.engine.evaluate import label_scores, quick_score
from tailorlm.methods.calibration import content_free_examples, label_bias
from tailorlm.methods.prompt_adapter import PromptAdapter

MAX_VAL = 200  # validation examples used for a choice: enough to rank, cheap to score
LABEL_BUDGET = 1000  # examples x labels: each label's words are scored for each example


def judged_rows(n: int, n_labels: int) -> int:
    """How many of n examples a choice is judged on: at most MAX_VAL, fewer when there are many
    labels (never under 50). `n_labels` is 0 for generation."""
    limit = MAX_VAL if not n_labels else min(MAX_VAL, max(50, LABEL_BUDGET // n_labels))
    return min(n, limit)


def validation_subset(val: Task, seed: int) -> Task:
    """judged_rows(...) of `val`'s examples: stratified by label where each label keeps one."""
    limit = judged_rows(len(val), len(val.labels) if val.kind == "classification" else 0)
    if len(val) <= limit:
        return val
    if val.kind == "classification":
        part = split(val, limit, seed)[1]
        # many labels, few rows: every label keeping one gives more rows than asked (77 labels
        # for 50 rows), or none at all; sample the rows instead
        if 0 < len(part) <= limit:
            return part
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(val), limit, replace=False))
    return val.with_examples([val.examples[i] for i in idx])


def best_adapter(backend, candidates: list[PromptAdapter], val: Task, calibrate: str,
                 log: list | None = None) -> PromptAdapter:
    """The best candidate on `val`, then with or without calibration (per `calibrate`)."""
    i, raw = rank(backend, candidates, val, log)
    return with_calibration(backend, candidates[i], raw, val, calibrate)


def rank(backend, candidates: list[PromptAdapter], val: Task,
         log: list | None = None) -> tuple[int, np.ndarray | None]:
    """(index of the best candidate on `val`, its raw label scores; None for generation)."""
    if val.kind != "classification":
        scores = [quick_score(backend, c, val) for c in candidates]
        return int(np.argmax(scores)), None
    gold = np.array([val.labels.index(e.label) for e in val.examples])
    ranked, raws = [], []
    for cand in candidates:
        raw = label_scores(backend, cand, val)
        raws.append(raw)
        normalised = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
        ranked.append(float(normalised[np.arange(len(gold)), gold].mean()))
        if log is not None:
            log.append({"template": cand.template.name, "demos": len(cand.demos) or cand.n_similar,
                        "gold_logprob": ranked[-1], "accuracy": float((raw.argmax(1) == gold).mean())})
    i = int(np.argmax(ranked))
    return i, raws[i]


def with_calibration(backend, adapter: PromptAdapter, raw: np.ndarray | None, val: Task,
                     calibrate: str) -> PromptAdapter:
    """`adapter` as is or calibrated, whichever scores better on `val` (per `calibrate`)."""
    if raw is None:  # generation: nothing to calibrate
        return adapter
    gold = np.array([val.labels.index(e.label) for e in val.examples])
    variants = _variants(backend, adapter, val, calibrate)
    # a variant differs only in how it adjusts the raw label scores, so those are reused
    accuracy = [float((v.adjust(raw).argmax(1) == gold).mean()) for v in variants]
    return variants[int(np.argmax(accuracy))]


def _variants(backend, adapter: PromptAdapter, val: Task, calibrate: str) -> list[PromptAdapter]:
    if calibrate == "off":
        return [adapter]
    cf_task = val.with_examples(content_free_examples())
    bias = label_bias(label_scores(backend, adapter, cf_task))
    calibrated = adapter.with_bias(bias)
    return [calibrated] if calibrate == "on" else [adapter, calibrated]
