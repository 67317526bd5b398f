"""The shared prompt search (methods/template_search.py), few_shot against its own template, and
the plan's metric in the prompt methods' choices."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.data.task import Example, Task
from tailorlm.methods import few_shot, get_method, selection, template_search
from tailorlm.methods.few_shot import FewShotConfig
from tailorlm.methods.templates import CLASSIFICATION, Template


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def scores_by(monkeypatch, table: dict[str, list[float]]):
    """Make row_scores return the given per-row scores, by template name."""
    def fake(backend, adapters, judge, metric):
        return np.array([table[a.template.name] for a in adapters]), []
    monkeypatch.setattr(template_search, "row_scores", fake)
    monkeypatch.setattr(template_search, "_SEARCHES", {})


def flat(n: int, value: float, noise: float = 0.3, seed: int = 0) -> list[float]:
    """n rows averaging exactly `value`, each +-noise in a seeded order."""
    signs = np.random.default_rng(seed).permutation([1.0, -1.0] * (n // 2))
    return list(value + noise * signs)


def offsets(n: int, **off) -> dict[str, list[float]]:
    return {name: flat(n, -0.7 + off.get(name, 0.0), seed=i)
            for i, name in enumerate(CLASSIFICATION)}


def test_a_clear_winner_is_kept_with_its_margin(monkeypatch):
    task = sentiment_task(8)
    table = offsets(16, text_topic=1.0)
    scores_by(monkeypatch, table)
    choice = template_search.search(_Fake(), task, None)
    assert choice.template.name == "text_topic" and choice.by == "data"
    assert choice.tied == ["text_topic"] and choice.n_judged == 16
    others = max(np.mean(v) for k, v in table.items() if k != "text_topic")
    assert choice.margin == pytest.approx(np.mean(table["text_topic"]) - others)


def test_candidates_the_rows_cannot_separate_tie_and_the_label_words_break_it(monkeypatch):
    """On few rows the best cue (here `Type`, ahead by noise) ties with the others; positive /
    negative suggest `Sentiment`, which is kept, and the record says so with a negative margin."""
    task = sentiment_task(4)
    table = offsets(8, text_type=0.05, text_sentiment=0.0, text_label=-0.01)
    scores_by(monkeypatch, table)
    choice = template_search.search(_Fake(), task, None)
    assert "text_type" in choice.tied and "text_sentiment" in choice.tied
    assert choice.template.name == "text_sentiment"
    assert choice.by.startswith("prior: the label words suggest 'Sentiment'")
    assert choice.margin == pytest.approx(-0.05)


def test_the_description_names_the_cue_before_the_label_words(monkeypatch):
    task = sentiment_task(4)
    task = Task(task.name, task.kind, task.examples, task.labels, task.verbalizer,
                description="the topic of the message")
    scores_by(monkeypatch, offsets(8, text_type=0.05, text_topic=0.01))
    choice = template_search.search(_Fake(), task, None)
    assert choice.template.name == "text_topic" and "description names 'Topic'" in choice.by


def test_without_a_prior_the_datas_best_is_kept_among_the_tied(monkeypatch):
    task = Task("t", "classification", [Example(f"x{i}", lab, lab) for i, lab in
                                        enumerate(["alpha", "beta"] * 4)])
    scores_by(monkeypatch, offsets(8, text_intent=0.05))
    choice = template_search.search(_Fake(), task, None)
    assert choice.template.name == "text_intent" and choice.by == "data"
    assert len(choice.tied) == len(CLASSIFICATION)


def test_every_training_and_validation_row_judges():
    task, val = sentiment_task(4), sentiment_task(3)
    assert len(template_search.judge_rows(task, val, seed=0)) == 14


def test_one_row_ties_everything():
    assert not template_search.separable(np.array([1.0]), np.array([0.0]))
    assert template_search.separable(np.array([1.0, 1.1, 0.9]), np.array([0.0, 0.1, -0.1]))


class _Fake:  # a backend stand-in for the memo key: row_scores is faked in these tests
    model = object()
    sha256 = "0" * 64


def test_few_shot_never_keeps_demonstrations_below_the_template_alone(backend, monkeypatch):
    task = sentiment_task(8)
    config = FewShotConfig(n_demos=2, template="text_label", n_candidates=2)
    real = few_shot.validation_parts

    def demos_lose(backend, adapter, val, metric=None, raw=None):
        value, proxy = real(backend, adapter, val, metric, raw)
        return (value - 0.5 if adapter.demos else value), proxy

    monkeypatch.setattr(few_shot, "validation_parts", demos_lose)
    adapter = get_method("few_shot").fit(backend, task, None, config, seed=0)
    assert adapter.demos == [] and not adapter.choice["demonstrations_kept"]
    v = adapter.choice["validation"]
    assert v["demonstrations"] < v["template_alone"]
    monkeypatch.setattr(few_shot, "validation_parts", real)
    for seed in range(3):  # on the real scores too: never below the template alone
        adapter = get_method("few_shot").fit(backend, task, None, config, seed=seed)
        v = adapter.choice["validation"]
        assert v["demonstrations" if adapter.demos else "template_alone"] == max(v.values())


def test_the_plans_metric_decides_calibration_and_demonstrations(backend, monkeypatch):
    seen = []
    real = selection.label_metric
    monkeypatch.setattr(selection, "label_metric",
                        lambda s, val, metric: seen.append(metric) or real(s, val, metric))
    task = sentiment_task(6)
    get_method("prompt_template").fit(backend, task, None,
                                      get_method("prompt_template").config(), metric="macro_f1")
    get_method("few_shot").fit(backend, task, None, FewShotConfig(n_demos=2, n_candidates=2),
                               metric="macro_f1")
    assert len(seen) >= 4 and set(seen) == {"macro_f1"}


def test_generation_candidates_are_ranked_by_the_plans_metric_only(backend, monkeypatch):
    from tailorlm.engine import metrics

    asked = []
    real = metrics.get_metric
    monkeypatch.setattr(metrics, "get_metric", lambda name: asked.append(name) or real(name))
    monkeypatch.setattr(template_search, "_SEARCHES", {})
    rows = [Example(f"name {w}", f"the {w}") for w in ("cat", "dog", "mat", "park")]
    task = Task("gen", "generation", rows)
    choice = template_search.search(backend, task, None, metric="chrf")
    assert asked and set(asked) == {"chrf"}
    assert choice.template.name in ("input_output", "instruct")
    assert isinstance(choice.template, Template)
