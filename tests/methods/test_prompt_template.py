import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.prompt_template import PromptTemplateConfig


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def test_auto_ranks_templates_by_gold_logprob_then_chooses_calibration(backend):
    from tailorlm.engine.evaluate import label_scores
    from tailorlm.methods.prompt_adapter import PromptAdapter
    from tailorlm.methods.selection import best_adapter
    from tailorlm.methods.templates import CLASSIFICATION

    task = sentiment_task(8)
    log = []
    candidates = [PromptAdapter("prompt_template", None, task, t) for t in CLASSIFICATION.values()]
    chosen = best_adapter(backend, candidates, task, "auto", log)
    assert len(log) == len(CLASSIFICATION)
    best = max(log, key=lambda r: r["gold_logprob"])  # max() keeps the first of ties
    assert chosen.template.name == best["template"]
    # by hand: normalised log-probability of the gold label, averaged
    raw = label_scores(backend, PromptAdapter("p", None, task, chosen.template), task)
    gold = [task.labels.index(e.label) for e in task.examples]
    norm = raw - np.logaddexp.reduce(raw, axis=1, keepdims=True)
    assert norm[np.arange(len(gold)), gold].mean() == pytest.approx(best["gold_logprob"])
    # calibration kept only if it raised accuracy on the same examples
    plain_acc = (raw.argmax(1) == gold).mean()
    chosen_acc = (chosen.adjust(raw).argmax(1) == gold).mean()
    assert chosen_acc >= plain_acc
    assert (chosen.bias is not None) == (chosen_acc > plain_acc)
    fitted = get_method("prompt_template").fit(backend, task, None, PromptTemplateConfig(), seed=0)
    # the shared search: the best by the proxy, unless the rows cannot separate it from others,
    # where the prior decides (the label words positive/negative suggest "Sentiment")
    record = fitted.choice
    if len(record["tied"]) == 1:
        assert fitted.template.name == chosen.template.name and record["by"] == "data"
    else:
        assert fitted.template.name == "text_sentiment" and "label words" in record["by"]


def test_fixed_template_without_calibration_needs_no_model(backend):
    config = PromptTemplateConfig(template="Review: {text}\nSentiment:", calibrate="off")
    adapter = get_method("prompt_template").fit(None, sentiment_task(), None, config)
    assert adapter.prompt(sentiment_task().examples[0]).own == "Review: a great film\nSentiment:"
    assert adapter.trainable_params == 0 and adapter.bias is None


def test_calibration_on_sets_a_bias(backend):
    config = PromptTemplateConfig(template="text_label", calibrate="on")
    adapter = get_method("prompt_template").fit(backend, sentiment_task(), None, config)
    assert adapter.bias.shape == (2,)
    np.testing.assert_allclose(np.exp(adapter.bias).sum(), 1.0, atol=1e-6)


def test_bad_calibrate_value():
    with pytest.raises(TailorError, match="calibrate must be one of auto, on, off"):
        PromptTemplateConfig(calibrate="yes")


def test_one_example_per_class_of_many_classes_is_judged():
    from tailorlm.data.task import Example, Task
    from tailorlm.methods.selection import validation_subset

    labels = [f"l{i}" for i in range(77)]  # banking77 at k=1: a stratified split is empty
    task = Task("t", "classification", [Example(f"x {lab}", lab, lab) for lab in labels])
    judge = validation_subset(task, seed=0)
    assert len(judge) == 50 and len({e.label for e in judge.examples}) == 50


def test_the_template_search_is_made_once_for_every_method(backend, monkeypatch):
    """prompt_template (either calibration), few_shot and the learning methods all read the one
    search on the same rows: the templates are scored once (it was twice for the two prompt
    methods, 98 s of few_shot's 187 s fit on banking77)."""
    from tailorlm.methods import template_search
    from tailorlm.methods.trainable import choose_template

    monkeypatch.setattr(template_search, "_SEARCHES", {})  # nothing searched by earlier tests
    calls = []
    real = template_search._search
    monkeypatch.setattr(template_search, "_search",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    task = sentiment_task(9)
    fit = get_method("prompt_template").fit
    calibrated = fit(backend, task, None, PromptTemplateConfig(calibrate="auto"), seed=3)
    plain = fit(backend, task, None, PromptTemplateConfig(calibrate="off"), seed=3)
    lora = get_method("lora").config()
    trained = choose_template(backend, lora, task, None, seed=3)
    assert len(calls) == 1
    assert plain.template.name == calibrated.template.name == trained.template.name
    assert plain.bias is None
