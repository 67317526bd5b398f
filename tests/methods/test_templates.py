import pytest

from helpers import sentiment_task
from tailorlm.data.task import Example
from tailorlm.errors import TailorError
from tailorlm.methods.templates import CLASSIFICATION, Template, resolve


def test_user_template_splits_query_and_answer():
    t = resolve("Review: {text}\nSentiment:", sentiment_task())
    assert (t.query, t.answer) == ("Review: {text}\n", "Sentiment:")
    p = t.prompt(sentiment_task(), Example("fun {not a placeholder}", "positive", "positive"))
    assert p.own == "Review: fun {not a placeholder}\nSentiment:"
    assert t.continuations(sentiment_task()) == [" negative", " positive"]


def test_placeholders_filled_and_demos_shared():
    task = sentiment_task()
    t = Template("x", query="Text: {text}\n", answer="Is it {labels}? Answer:",
                 instruction="Decide {description}.")
    demos = task.examples[:2]
    p = t.prompt(task, task.examples[3], demos)
    assert p.shared.startswith("Decide the category of the text.\n\n")
    assert "Text: a great film\nIs it negative or positive? Answer: positive\n\n" in p.shared
    assert p.own == "Text: the best movie\nIs it negative or positive? Answer:"
    per_query = t.prompt(task, task.examples[3], demos, shared_demos=False)
    assert per_query.shared == "Decide the category of the text.\n\n"
    assert per_query.text == p.text


def test_builtins_end_shared_text_on_a_newline():
    # the engine tokenizes shared and own apart: the split must fall on a token boundary
    task = sentiment_task()
    for t in CLASSIFICATION.values():
        p = t.prompt(task, task.examples[0], task.examples[1:3])
        assert p.shared.endswith("\n"), t.name


@pytest.mark.parametrize("bad, fix", [("Review: no placeholder", "{text} placeholder"),
                                      ("Review: {text}", "end it with a cue"),
                                      ({"query": "{text}", "bogus": 1}, "fields are")])
def test_bad_templates(bad, fix):
    with pytest.raises(TailorError, match=fix):
        resolve(bad, sentiment_task())
