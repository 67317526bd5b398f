"""evaluate(): what it scores and what it measures, each figure checked against its definition."""

import time
from dataclasses import dataclass

import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.data.task import Example, Task
from tailorlm.engine import evaluate as ev
from tailorlm.engine.evaluate import LATENCY_QUERIES, evaluate, label_scores
from tailorlm.engine.generate import generate
from tailorlm.methods.contract import groups_of, serving_of
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.templates import CLASSIFICATION, GENERATION


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def prompt_adapter(task):
    templates = CLASSIFICATION if task.kind == "classification" else GENERATION
    return PromptAdapter("prompt_template", None, task.with_examples([]),
                         next(iter(templates.values())))


@dataclass
class SlowToBind:
    """An adapter whose binding takes 0.3 s: latency must not include it."""

    inner: PromptAdapter
    method: str = "slow"

    def bind(self, backend):
        time.sleep(0.3)
        return self.inner.bind(backend)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_classification_figures(backend):
    task = sentiment_task(3)  # 6 rows: cycled to 20 latency queries
    adapter = prompt_adapter(task)
    result = evaluate(backend, adapter, task, batch_size=4)
    assert result.latency_queries == LATENCY_QUERIES == 20
    assert 0 < result.latency_ms_p50 <= result.latency_ms_p95
    assert result.queries_per_second == pytest.approx(6 / result.seconds)
    assert result.latency_ms_per_query == pytest.approx(1000 / result.queries_per_second)
    assert result.batch_size == 4
    assert result.eval_flops == 2 * backend.total_params * result.tokens
    assert result.label_scores.shape == (6, 2)
    np.testing.assert_allclose(result.label_scores, label_scores(backend, adapter, task))
    assert [task.labels[i] for i in result.label_scores.argmax(1)] == result.predictions
    # classification's answer: the predicted label's words, in tokens
    lengths = {label: len(backend.encode(c))
               for label, c in zip(task.labels, adapter.continuations(task))}
    assert result.generated_tokens_per_query == pytest.approx(
        np.mean([lengths[p] for p in result.predictions]))
    assert result.rss_before_mb > 0 and result.peak_rss_mb >= 0
    assert evaluate(backend, adapter, task, latency_queries=0).latency_ms_p50 is None


def test_latency_leaves_binding_out(backend):
    task = sentiment_task(2)
    result = evaluate(backend, SlowToBind(prompt_adapter(task)), task)
    assert result.latency_ms_p95 < 300  # each query would cost 300 ms if binding were inside


def test_generation_records_the_tokens_it_generated(backend):
    rows = [Example(input=t, target="x") for t in ("the cat", "a dog ran", "the park")]
    task = Task("gen", "generation", rows)
    adapter = prompt_adapter(task)
    result = evaluate(backend, adapter, task, latency_queries=3)
    picked = []
    generate(backend, [adapter.prompt(e) for e in rows], stop=adapter.stop,
             on_generated=picked.append)
    assert result.generated_tokens_per_query == pytest.approx(sum(picked) / 3)
    assert 1 <= result.generated_tokens_per_query <= 64
    assert result.label_scores is None and result.latency_queries == 3


def test_groups_of_and_serving_of_defaults(backend):
    task = sentiment_task(2)
    adapter = prompt_adapter(task)
    assert groups_of(adapter, task) == [("prompt_template", adapter, [0, 1, 2, 3])]
    assert serving_of(adapter) == {}


def test_latency_queries_are_drawn_then_cycled(backend, monkeypatch):
    seen = []
    monkeypatch.setattr(ev, "_answer_one", lambda b, t, i, *rest: seen.append(i))
    task = sentiment_task(3)
    times = ev.measure_latency(backend, prompt_adapter(task), task, 20, seed=0)
    warmup, timed = seen[:1], seen[1:]
    assert len(times) == 20 and len(timed) == 20 and warmup == [0]
    # three whole rounds of the 6 rows, then 2 more: every row 3 or 4 times
    assert sorted(timed.count(i) for i in range(6)) == [3, 3, 3, 3, 4, 4]
