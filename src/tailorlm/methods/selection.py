"""Choosing among prompt candidates on validation data (templates, demonstration sets, calibration).

Each candidate adapter is scored once on the validation examples; calibration on/off costs only
three extra content-free queries, since it re-weights the same label scores. Ties keep the earlier
candidate, so the order candidates are listed in is the order of preference.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.sample import split
from tailorlm.data.task import Task
from tailorlm.engine.evaluate import label_scores, quick_score
from tailorlm.engine.metrics import get_metric
from tailorlm.methods.calibration import content_free_examples, label_bias
from tailorlm.methods.prompt_adapter import PromptAdapter

MAX_VAL = 200  # validation examples used for a choice: enough to rank, cheap to score


def validation_subset(val: Task, seed: int) -> Task:
    if len(val) <= MAX_VAL:
        return val
    if val.kind == "classification":
        return split(val, MAX_VAL, seed)[1]
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(val), MAX_VAL, replace=False))
    return val.with_examples([val.examples[i] for i in idx])


def best_adapter(backend, candidates: list[PromptAdapter], val: Task, calibrate: str,
                 log: list | None = None) -> PromptAdapter:
    """The candidate (with or without calibration, per `calibrate`) that scores best on `val`."""
    best, best_score = None, -np.inf
    for cand in candidates:
        for adapter in _variants(backend, cand, val, calibrate):
            score = _score(backend, adapter, val)
            if log is not None:
                log.append({"template": adapter.template.name, "calibrated": adapter.bias is not None,
                            "demos": len(adapter.demos) or adapter.n_similar, "val_score": score})
            if score > best_score:
                best, best_score = adapter, score
    return best


def _variants(backend, adapter: PromptAdapter, val: Task, calibrate: str) -> list[PromptAdapter]:
    if val.kind != "classification" or calibrate == "off":
        return [adapter]
    cf_task = val.with_examples(content_free_examples())
    bias = label_bias(label_scores(backend, adapter, cf_task))
    calibrated = adapter.with_bias(bias)
    return [calibrated] if calibrate == "on" else [adapter, calibrated]


def _score(backend, adapter: PromptAdapter, val: Task) -> float:
    if val.kind != "classification":
        return quick_score(backend, adapter, val)
    scores = label_scores(backend, adapter, val)
    preds = [val.labels[i] for i in scores.argmax(axis=1)]
    return get_metric("accuracy").fn(preds, [e.label for e in val.examples])
