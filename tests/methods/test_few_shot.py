import numpy as np
import pytest

from helpers import reference_scores, sentiment_task, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.few_shot import FewShotConfig, pick_demos


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def test_pick_demos_balanced_cover_random_are_seeded():
    task = sentiment_task(8)
    labels = task.labels
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    balanced = pick_demos(task.examples, 4, "balanced", labels, rng())
    assert sorted(e.label for e in balanced) == ["negative", "negative", "positive", "positive"]
    assert balanced == pick_demos(task.examples, 4, "balanced", labels, rng())
    assert balanced != pick_demos(task.examples, 4, "balanced", labels, np.random.default_rng(4))
    cover = pick_demos(task.examples, 1, "cover", labels, rng())
    assert {e.label for e in cover} == set(labels)  # grows to one per class
    assert len(pick_demos(task.examples, 5, "random", labels, rng())) == 5


@pytest.mark.parametrize("selection", ["balanced", "similar"])
def test_fit_and_round_trip(backend, tmp_path, selection):
    task = sentiment_task(8)
    config = FewShotConfig(n_demos=2, selection=selection, template="text_label", n_candidates=2)
    adapter = get_method("few_shot").fit(backend, task, None, config, seed=0)
    scores = label_scores(backend, adapter, task)
    save_adapter(adapter, tmp_path / "a", {"base_model": "tiny"})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.json", "card.json"]
    again = load_adapter(tmp_path / "a")
    assert [again.prompt(e) for e in task.examples] == [adapter.prompt(e) for e in task.examples]
    np.testing.assert_array_equal(label_scores(backend, again, task), scores)
    # the engine's cached scores equal a forward pass per label over the same prompts
    raw = reference_scores(backend, [adapter.prompt(e) for e in task.examples],
                           adapter.continuations(task))
    np.testing.assert_allclose(adapter.adjust(raw), scores, atol=1e-4)


def test_one_example_per_class_is_judged_on_the_pool(backend):
    task = sentiment_task(1)  # nothing to hold out: the split would leave validation empty
    config = FewShotConfig(n_demos=2, template="text_label", n_candidates=2)
    adapter = get_method("few_shot").fit(backend, task, None, config, seed=0)
    assert sorted(e.label for e in adapter.demos) == sorted(task.labels)


def test_similar_picks_nearest_and_never_the_query(backend):
    task = sentiment_task(8)
    config = FewShotConfig(n_demos=1, selection="similar", template="text_label", calibrate="off")
    adapter = get_method("few_shot").fit(backend, task, None, config, seed=0)
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [e.input for e in task.examples]
    m = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    sims = (m @ m.T).toarray()
    for i, query in enumerate(task.examples):
        sims[i, i] = -1  # a query is never its own demonstration
        nearest = texts[int(np.argmax(sims[i]))]
        own = adapter.prompt(query).own
        assert own.startswith(f"Text: {nearest}\nLabel: ") and own.count("Text: ") == 2


@pytest.mark.parametrize("bad, fix", [({"selection": "best"}, "selection must be one of"),
                                      ({"n_demos": 0}, "at least 1"),
                                      ({"demos": 3}, "valid options")])
def test_config_errors_say_how_to_fix(bad, fix):
    with pytest.raises(TailorError, match=fix):
        FewShotConfig.from_dict(bad)
