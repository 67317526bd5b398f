import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.prompt_template import PromptTemplateConfig


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def test_auto_keeps_the_best_validation_choice(backend):
    from tailorlm.methods.selection import best_adapter
    from tailorlm.methods.prompt_adapter import PromptAdapter
    from tailorlm.methods.templates import CLASSIFICATION

    task = sentiment_task(8)
    log = []
    candidates = [PromptAdapter("prompt_template", None, task, t) for t in CLASSIFICATION.values()]
    chosen = best_adapter(backend, candidates, task, "auto", log)
    assert len(log) == 2 * len(CLASSIFICATION)  # each template, with and without calibration
    best = max(row["val_score"] for row in log)
    first_best = next(r for r in log if r["val_score"] == best)
    assert (chosen.template.name, chosen.bias is not None) == \
        (first_best["template"], first_best["calibrated"])
    fitted = get_method("prompt_template").fit(backend, task, None, PromptTemplateConfig(), seed=0)
    assert fitted.template.name == chosen.template.name


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
