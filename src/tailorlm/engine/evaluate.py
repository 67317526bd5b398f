"""Evaluate an adapter on a task: predictions, the task's metric, its bootstrap CI, and cost.

Classification: every label's verbalization is scored after the adapter's prompt
(engine/scoring.py), the adapter adjusts the scores (e.g. calibration), and the arg-max label is the
prediction. Generation: greedy decoding (engine/generate.py), scored against the references.

An adapter that routes examples to parts of itself (a hybrid's per-variant adapters) offers
`groups(task) -> [(name, adapter, indices)]`: each group is evaluated with its own adapter (its
own binding, e.g. its own virtual prefix), the results are stitched back in task order, and
`Evaluation.extra["groups"]` holds each group's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter
from tailorlm.engine.metrics import bootstrap_ci, get_metric
from tailorlm.models.backend import Backend


@dataclass
class Evaluation:
    metric: str
    score: float
    score_ci: tuple[float, float]
    n_eval: int
    predictions: list[str]
    seconds: float
    tokens: int  # tokens the model processed
    prompt_tokens_per_query: float  # positions one query reads: virtual + shared + own
    latency_ms_per_query: float
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)


def default_metric(task: Task) -> str:
    return "accuracy" if task.kind == "classification" else "rouge_l"


def label_scores(backend: Backend, adapter, task: Task, on_tokens=None,
                 batch_size: int = 16) -> np.ndarray:
    """(N, L) adjusted label scores of the adapter on the task's examples."""
    from tailorlm.engine.scoring import score_labels

    if hasattr(adapter, "groups"):
        scores = np.zeros((len(task), len(task.labels)))
        for _, part, idx in adapter.groups(task):
            scores[idx] = label_scores(backend, part, _subset(task, idx), on_tokens, batch_size)
        return scores

    prompts = [adapter.prompt(e) for e in task.examples]
    bound = adapter.bind(backend)
    if _remote(bound):  # the endpoint scores in the best tier it offers (models/remote.py)
        return adapter.adjust(bound.score_labels(prompts, adapter.continuations(task),
                                                 on_tokens=on_tokens))
    logprobs = score_labels(bound, prompts, adapter.continuations(task),
                            batch_size=batch_size, on_tokens=on_tokens)
    return adapter.adjust(logprobs)


def predict(backend: Backend, adapter, task: Task, on_tokens=None,
            batch_size: int = 16) -> list[str]:
    if task.kind == "classification":
        if _remote(backend) and not hasattr(adapter, "groups"):  # unparsed answers predict ""
            return backend.predict_labels([adapter.prompt(e) for e in task.examples],
                                          adapter.continuations(task), task.labels,
                                          adapter.adjust, on_tokens=on_tokens)
        scores = label_scores(backend, adapter, task, on_tokens, batch_size)
        return [task.labels[i] for i in scores.argmax(axis=1)]
    from tailorlm.engine.generate import generate

    if hasattr(adapter, "groups"):
        out: list[str] = [""] * len(task)
        for _, part, idx in adapter.groups(task):
            for i, text in zip(idx, predict(backend, part, _subset(task, idx), on_tokens,
                                            batch_size)):
                out[i] = text
        return out
    prompts = [adapter.prompt(e) for e in task.examples]
    bound = adapter.bind(backend)
    if _remote(bound):
        return bound.generate(prompts, stop=adapter.stop, on_tokens=on_tokens)
    return generate(bound, prompts, stop=adapter.stop, batch_size=batch_size,
                    on_tokens=on_tokens)


def quick_score(backend: Backend, adapter, task: Task, metric: str | None = None) -> float:
    """The metric alone, no cost or CI: what methods use to choose on validation data."""
    name = metric or default_metric(task)
    return get_metric(name).fn(predict(backend, adapter, task), _references(task))


def evaluate(backend: Backend, adapter, task: Task, *, metric: str | None = None,
             seed: int = 0, batch_size: int = 16) -> Evaluation:
    name = metric or default_metric(task)
    with CostMeter() as meter:
        preds = predict(backend, adapter, task, on_tokens=meter.add_tokens, batch_size=batch_size)
    refs = _references(task)
    m = get_metric(name)
    score = m.fn(preds, refs)
    ci = bootstrap_ci(name, preds, refs, seed=seed)
    prompt_tokens = _prompt_tokens(backend, adapter, task)
    n = len(task.examples)
    extra = {}
    if hasattr(adapter, "groups"):
        extra["groups"] = {group: {"score": float(m.fn([preds[i] for i in idx],
                                                       [refs[i] for i in idx])),
                                   "n_eval": len(idx)}
                           for group, _, idx in adapter.groups(task)}
    return Evaluation(metric=name, score=float(score), score_ci=(float(ci[0]), float(ci[1])),
                      n_eval=n, predictions=preds, seconds=meter.seconds, tokens=meter.tokens,
                      prompt_tokens_per_query=float(np.mean(prompt_tokens)),
                      latency_ms_per_query=1000.0 * meter.seconds / max(n, 1),
                      peak_rss_mb=meter.peak_rss_mb, extra=extra)


def _prompt_tokens(backend: Backend, adapter, task: Task) -> list[int]:
    """Tokens each query's prompt costs: its text, and the virtual positions it is read after."""
    if hasattr(adapter, "groups"):  # each group has its own binding, so its own virtual prefix
        counts = [0] * len(task)
        for _, part, idx in adapter.groups(task):
            for i, c in zip(idx, _prompt_tokens(backend, part, _subset(task, idx))):
                counts[i] = c
        return counts
    # A soft prompt's or prefix's virtual positions are read by every query too.
    bound = adapter.bind(backend)
    n_virtual = bound.virtual_prefix()[1] if bound.virtual_prefix is not None else 0
    return [n_virtual + backend.count_tokens(adapter.prompt(e).text) for e in task.examples]


def _remote(backend) -> bool:
    """A backend behind an API scores and generates itself, in the tier its endpoint offers."""
    return getattr(backend, "where", "local") == "remote"


def _subset(task: Task, indices: list[int]) -> Task:
    return task.with_examples([task.examples[i] for i in indices])


def _references(task: Task):
    if task.kind == "classification":
        return [e.label for e in task.examples]
    return [list(e.references) or [e.target] for e in task.examples]
