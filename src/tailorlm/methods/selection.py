"""Choosing among prompt candidates on validation data (templates, demonstration sets, calibration).

Two stages, because a few dozen validation examples are a noisy judge:

  1. candidates (templates, demonstration sets) are ranked by the mean log-probability of the gold
     label, normalised over the label set, on the raw scores: a proper scoring rule that uses the
     model's confidence, not only the arg-max, so it varies less than accuracy on small sets (the
     documented proxy; issue 9);
  2. the winner is kept with or without contextual calibration by the plan's metric (`metric`:
     accuracy unless the plan names another), which has the last word.

Judging both at once lets calibration (a free bias per label: with two labels, a threshold fitted
to the validation set) rescue a weak template by overfitting. On sst2 with 32 examples the joint
choice took "Input/Category" + calibration (test 0.775); the staged one "Text/Sentiment" (0.815).
Ties keep the earlier candidate. Generation candidates are ranked by the plan's metric only
(rouge_l when the plan names none: the task kind's default, never a metric of our choosing).

`judged(...)` is that rule as one number where both must be compared at once (a kept
checkpoint, demonstrations against the template alone): the metric, ties broken by the proxy.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.sample import split
from tailorlm.data.task import Task
from tailorlm.engine.evaluate import default_metric, label_scores, quick_score
from tailorlm.engine.metrics import get_metric
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


PROXY_WEIGHT = 1e-4  # judged(): the proxy only orders candidates the metric ties (see there)


def metric_name(task: Task, metric: str | None) -> str:
    """The plan's metric, or the task kind's default when the plan names none."""
    return metric or default_metric(task)


def gold_logprobs(raw: np.ndarray, val: Task) -> np.ndarray:
    """(N,) log-probability of each row's gold label, normalised over the label set."""
    gold = np.array([val.labels.index(e.label) for e in val.examples])
    normalised = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
    return normalised[np.arange(len(gold)), gold]


def label_metric(scores: np.ndarray, val: Task, metric: str | None) -> float:
    """The plan's metric of the arg-max predictions of (N, L) label scores."""
    preds = [val.labels[i] for i in scores.argmax(axis=1)]
    return float(get_metric(metric_name(val, metric)).fn(preds, [e.label for e in val.examples]))


def judged(metric_value: float, proxy: float | None = None) -> float:
    """One number that orders by the plan's metric and, where it ties, by the proxy.

    metric + PROXY_WEIGHT * exp(mean gold log-prob): exp(...) is in (0, 1], so the proxy moves the
    number by less than 1e-4, below any difference of accuracy or F1 on up to a thousand rows.
    """
    if proxy is None:
        return float(metric_value)
    return float(metric_value) + PROXY_WEIGHT * float(np.exp(proxy))


def best_adapter(backend, candidates: list[PromptAdapter], val: Task, calibrate: str,
                 log: list | None = None, metric: str | None = None) -> PromptAdapter:
    """The best candidate on `val`, then with or without calibration (per `calibrate`)."""
    i, raw = rank(backend, candidates, val, log, metric)
    return with_calibration(backend, candidates[i], raw, val, calibrate, metric)


def rank(backend, candidates: list[PromptAdapter], val: Task,
         log: list | None = None, metric: str | None = None) -> tuple[int, np.ndarray | None]:
    """(index of the best candidate on `val`, its raw label scores; None for generation)."""
    if val.kind != "classification":
        scores = [quick_score(backend, c, val, metric_name(val, metric)) for c in candidates]
        return int(np.argmax(scores)), None
    gold = np.array([val.labels.index(e.label) for e in val.examples])
    ranked, raws = [], []
    for cand in candidates:
        raw = label_scores(backend, cand, val)
        raws.append(raw)
        ranked.append(float(gold_logprobs(raw, val).mean()))
        if log is not None:
            log.append({"template": cand.template.name, "demos": len(cand.demos) or cand.n_similar,
                        "gold_logprob": ranked[-1],
                        "accuracy": float((raw.argmax(1) == gold).mean())})
    i = int(np.argmax(ranked))
    return i, raws[i]


def with_calibration(backend, adapter: PromptAdapter, raw: np.ndarray | None, val: Task,
                     calibrate: str, metric: str | None = None) -> PromptAdapter:
    """`adapter` as is or calibrated, whichever scores better on `val` by the plan's metric
    (per `calibrate`; a tie keeps it uncalibrated)."""
    if raw is None:  # generation: nothing to calibrate
        return adapter
    variants = _variants(backend, adapter, val, calibrate)
    # a variant differs only in how it adjusts the raw label scores, so those are reused
    scores = [label_metric(v.adjust(raw), val, metric) for v in variants]
    return variants[int(np.argmax(scores))]


def validation_parts(backend, adapter, val: Task, metric: str | None = None,
                     raw: np.ndarray | None = None) -> tuple[float, float | None]:
    """(the plan's metric of `adapter` on `val`, the proxy: mean gold log-prob; None for
    generation). `raw`: the adapter's unadjusted label scores on `val`, when already computed."""
    if val.kind != "classification":
        return quick_score(backend, adapter, val, metric_name(val, metric)), None
    scores = label_scores(backend, adapter, val) if raw is None else adapter.adjust(raw)
    return label_metric(scores, val, metric), float(gold_logprobs(scores, val).mean())


def validation_value(backend, adapter, val: Task, metric: str | None = None,
                     raw: np.ndarray | None = None) -> float:
    """judged(): the plan's metric of `adapter` on `val`, the proxy breaking ties."""
    return judged(*validation_parts(backend, adapter, val, metric, raw))


def _variants(backend, adapter: PromptAdapter, val: Task, calibrate: str) -> list[PromptAdapter]:
    if calibrate == "off":
        return [adapter]
    cf_task = val.with_examples(content_free_examples())
    bias = label_bias(label_scores(backend, adapter, cf_task))
    calibrated = adapter.with_bias(bias)
    return [calibrated] if calibrate == "on" else [adapter, calibrated]
