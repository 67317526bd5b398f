"""Evaluate an adapter on a task: predictions, the task's metric, its bootstrap CI, and cost.

Classification: every label's verbalization is scored after the adapter's prompt
(engine/scoring.py), the adapter adjusts the scores (e.g. calibration), and the arg-max label is the
prediction. Generation: greedy decoding (engine/generate.py), scored against the references.

An adapter made of parts with their own binding (a hybrid's per-variant adapters) names them in
`groups_of(adapter, task)` (methods/contract.py): each group is evaluated with its own part (its
own binding, e.g. its own virtual prefix), the results are stitched back in task order, and
`Evaluation.extra["groups"]` holds each group's score. Any other adapter is one group.

What an evaluation costs is measured two ways, because they answer different questions:

    throughput   every query at the evaluation batch size, shared prefixes computed once:
                 seconds, queries_per_second (what scoring a test set or a nightly batch costs)
    latency      LATENCY_QUERIES queries one at a time (batch 1), after one warm-up query, with
                 the adapter already bound and each shared prefix's cache kept, as a server with
                 prefix caching keeps it: latency_ms_p50, latency_ms_p95 (what one user waits)

Binding or loading the adapter is in neither (compare/runner.py measures it as load_seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter, forward_flops
from tailorlm.engine.metrics import bootstrap_ci, get_metric
from tailorlm.engine.prompt import prompt_ids
from tailorlm.models.backend import Backend

LATENCY_QUERIES = 20  # queries timed one at a time; fewer test rows are cycled to reach it


@dataclass
class Evaluation:
    metric: str
    score: float
    score_ci: tuple[float, float]
    n_eval: int
    predictions: list[str]
    seconds: float  # wall time of the whole evaluation at `batch_size` (throughput)
    tokens: int  # tokens the model processed
    prompt_tokens_per_query: float  # positions one query reads: virtual + BOS + shared + own
    # 1000 * seconds / n_eval: wall time per query at the evaluation batch size. A throughput
    # figure (= 1000 / queries_per_second), NOT the wait of one query: that is latency_ms_p50/p95.
    latency_ms_per_query: float
    peak_rss_mb: float  # the evaluation's own memory: peak RSS minus rss_before_mb
    rss_before_mb: float = 0.0  # resident memory when it started (the base model and the rest)
    queries_per_second: float = 0.0  # n_eval / seconds, at batch_size
    batch_size: int = 16
    latency_ms_p50: float | None = None  # one query at a time: median over latency_queries
    latency_ms_p95: float | None = None  # ... and its 95th percentile
    latency_queries: int = 0  # how many queries were timed one at a time (0: not measured)
    eval_flops: int = 0  # 2 * base parameters * tokens processed (engine/cost.py)
    # Mean tokens per answer. Generation: tokens the model generated (end-of-sequence included).
    # Classification: tokens of the predicted label's words, what an API would generate to answer.
    generated_tokens_per_query: float | None = None
    # (N, L) adjusted label scores (the arg-max is the prediction); None for generation
    label_scores: np.ndarray | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)


def default_metric(task: Task) -> str:
    return "accuracy" if task.kind == "classification" else "rouge_l"


def label_scores(backend: Backend, adapter, task: Task, on_tokens=None,
                 batch_size: int = 16) -> np.ndarray:
    """(N, L) adjusted label scores of the adapter on the task's examples."""
    from tailorlm.engine.scoring import score_labels
    from tailorlm.methods.contract import groups_of

    scores = np.zeros((len(task), len(task.labels)))
    for _, part, idx in groups_of(adapter, task):
        if not idx:
            continue
        sub = _subset(task, idx)
        prompts = [part.prompt(e) for e in sub.examples]
        bound = part.bind(backend)
        if _remote(bound):  # the endpoint scores in the best tier it offers (models/remote.py)
            logprobs = bound.score_labels(prompts, part.continuations(sub), on_tokens=on_tokens)
        else:
            logprobs = score_labels(bound, prompts, part.continuations(sub),
                                    batch_size=batch_size, on_tokens=on_tokens)
        scores[idx] = part.adjust(logprobs)
    return scores


def predict(backend: Backend, adapter, task: Task, on_tokens=None, batch_size: int = 16,
            on_generated=None) -> list[str]:
    if task.kind == "classification":
        if _remote(backend):  # unparsed answers predict "" (no hybrid runs remote: check_backend)
            return backend.predict_labels([adapter.prompt(e) for e in task.examples],
                                          adapter.continuations(task), task.labels,
                                          adapter.adjust, on_tokens=on_tokens)
        scores = label_scores(backend, adapter, task, on_tokens, batch_size)
        return [task.labels[i] for i in scores.argmax(axis=1)]
    from tailorlm.engine.generate import generate
    from tailorlm.methods.contract import groups_of

    out: list[str] = [""] * len(task)
    for _, part, idx in groups_of(adapter, task):
        if not idx:
            continue
        prompts = [part.prompt(e) for e in _subset(task, idx).examples]
        bound = part.bind(backend)
        if _remote(bound):
            texts = bound.generate(prompts, stop=part.stop, on_tokens=on_tokens)
        else:
            texts = generate(bound, prompts, stop=part.stop, batch_size=batch_size,
                             on_tokens=on_tokens, on_generated=on_generated)
        for i, text in zip(idx, texts):
            out[i] = text
    return out


def quick_score(backend: Backend, adapter, task: Task, metric: str | None = None) -> float:
    """The metric alone, no cost or CI: what methods use to choose on validation data."""
    name = metric or default_metric(task)
    return get_metric(name).fn(predict(backend, adapter, task), _references(task))


def evaluate(backend: Backend, adapter, task: Task, *, metric: str | None = None,
             seed: int = 0, batch_size: int = 16,
             latency_queries: int = LATENCY_QUERIES) -> Evaluation:
    """Score `adapter` on `task` and measure what it cost; `latency_queries=0` skips latency."""
    from tailorlm.methods.contract import groups_of

    name = metric or default_metric(task)
    n = len(task.examples)
    scores, generated = None, []
    with CostMeter() as meter:
        if task.kind == "classification" and not _remote(backend):
            scores = label_scores(backend, adapter, task, meter.add_tokens, batch_size)
            preds = [task.labels[i] for i in scores.argmax(axis=1)]
        else:  # generation; or an endpoint, whose generate tier answers "" when unparseable
            preds = predict(backend, adapter, task, meter.add_tokens, batch_size,
                            on_generated=generated.append)
    latencies = measure_latency(backend, adapter, task, latency_queries, seed=seed)
    refs = _references(task)
    m = get_metric(name)
    ci = bootstrap_ci(name, preds, refs, seed=seed)
    extra = {}
    groups = groups_of(adapter, task)
    if any(part is not adapter for _, part, _ in groups):
        extra["groups"] = {group: {"score": float(m.fn([preds[i] for i in idx],
                                                       [refs[i] for i in idx])),
                                   "n_eval": len(idx)}
                           for group, _, idx in groups}
    if task.kind == "classification":
        answer = dict(zip(task.labels, (backend.count_tokens(c)
                                        for c in adapter.continuations(task))))
        per_query = float(np.mean([answer.get(p, 0) for p in preds])) if n else None
    else:
        per_query = sum(generated) / n if n else None
    seconds = max(meter.seconds, 1e-9)
    return Evaluation(metric=name, score=float(m.fn(preds, refs)),
                      score_ci=(float(ci[0]), float(ci[1])), n_eval=n, predictions=preds,
                      seconds=meter.seconds, tokens=meter.tokens,
                      prompt_tokens_per_query=float(np.mean(_prompt_tokens(backend, adapter, task)))
                      if n else 0.0,
                      latency_ms_per_query=1000.0 * meter.seconds / max(n, 1),
                      peak_rss_mb=meter.peak_delta_mb, rss_before_mb=meter.start_rss_mb,
                      queries_per_second=n / seconds, batch_size=batch_size,
                      latency_ms_p50=_percentile(latencies, 50),
                      latency_ms_p95=_percentile(latencies, 95),
                      latency_queries=len(latencies),
                      eval_flops=None if backend.total_params is None  # unknown behind an API
                      else forward_flops(backend.total_params, meter.tokens),
                      generated_tokens_per_query=per_query, label_scores=scores, extra=extra)


def measure_latency(backend: Backend, adapter, task: Task, n: int = LATENCY_QUERIES, *,
                    seed: int = 0) -> list[float]:
    """Milliseconds to answer each of `n` queries one at a time (batch 1).

    Every part of the adapter is bound, and answers one query untimed (warm-up), before the
    clock starts; each part keeps its shared prefixes' caches across queries (a PrefixCache), as
    a server with prefix caching does. The queries are `n` rows drawn without replacement,
    cycled when the task has fewer.
    """
    from tailorlm.engine.scoring import PrefixCache
    from tailorlm.methods.contract import groups_of

    if n <= 0 or not len(task) or _remote(backend):
        return []  # an endpoint's latency is its calls' (models/api_client.py: api_latency_ms_*)
    rng = np.random.default_rng(seed)
    picks = [int(i) for i in np.concatenate([rng.permutation(len(task))
                                             for _ in range(-(-n // len(task)))])[:n]]
    served = {}  # example index -> (part, bound backend, prefix cache)
    for _, part, idx in groups_of(adapter, task):
        if not idx:
            continue
        bound = part.bind(backend)
        ready = (part, bound, PrefixCache(bound))
        _answer_one(backend, task, idx[0], *ready)  # warm-up: untimed
        served.update({i: ready for i in idx})
    times = []
    for i in picks:
        start = time.perf_counter()
        _answer_one(backend, task, i, *served[i])
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def _answer_one(backend, task: Task, i: int, part, bound, prefixes) -> str:
    """One query answered alone, as a server would: prompt, scores or greedy text, the answer."""
    example = task.examples[i]
    prompt = part.prompt(example)
    if task.kind == "classification":
        from tailorlm.engine.scoring import score_labels

        logprobs = score_labels(bound, [prompt], part.continuations(task), batch_size=1,
                                prefixes=prefixes)
        return task.labels[int(part.adjust(logprobs).argmax())]
    from tailorlm.engine.generate import generate

    return generate(bound, [prompt], stop=part.stop, batch_size=1, prefixes=prefixes)[0]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _prompt_tokens(backend: Backend, adapter, task: Task) -> list[int]:
    """Tokens each query's prompt costs: BOS and its text, and the virtual positions it is read
    after (a soft prompt's or prefix's: every query reads them; each part has its own)."""
    from tailorlm.methods.contract import groups_of

    counts = [0] * len(task)
    for _, part, idx in groups_of(adapter, task):
        if not idx:
            continue
        bound = part.bind(backend)
        n_virtual = bound.virtual_prefix()[1] if bound.virtual_prefix is not None else 0
        for i in idx:
            counts[i] = n_virtual + _count(backend, part.prompt(task.examples[i]))
    return counts


def _count(backend, prompt) -> int:
    """A prompt's tokens as the model reads them: locally with BOS where the tokenizer adds
    one; through an API, as the endpoint's tokenizer counts them."""
    if _remote(backend):
        return backend.count_tokens(prompt.text)
    return len(prompt_ids(backend, prompt))


def _remote(backend) -> bool:
    """A backend behind an API scores and generates itself, in the tier its endpoint offers."""
    return getattr(backend, "where", "local") == "remote"


def _subset(task: Task, indices: list[int]) -> Task:
    if len(indices) == len(task) and list(indices) == list(range(len(task))):
        return task
    return task.with_examples([task.examples[i] for i in indices])


def _references(task: Task):
    if task.kind == "classification":
        return [e.label for e in task.examples]
    return [list(e.references) or [e.target] for e in task.examples]
