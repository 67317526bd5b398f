"""Per-row outcomes: the predictions files, the compact per-row form results keep, and the
fitted / held-out scores, on distinct train and test rows."""

import json

import pytest

from helpers import sentiment_task, tiny_backend, write_jsonl
from tailorlm.compare.runner import Run, read_test_rows, run_comparison
from tailorlm.data.task import example_id
from tailorlm.engine.predictions import read_predictions


def split_rows(task, n_train):
    """The first n_train rows of each label to train on, the rest to test on: no row shared."""
    by_label = {}
    for e in task.examples:
        by_label.setdefault(e.label, []).append(e)
    train = [e for rows in by_label.values() for e in rows[:n_train]]
    test = [e for rows in by_label.values() for e in rows[n_train:]]
    return task.with_examples(train), task.with_examples(test)


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def test_runs_write_predictions_and_keep_per_row_outcomes(backend, tmp_path):
    train, test = split_rows(sentiment_task(8), 5)
    runs = [Run("prompt_template", {"template": "text_label"}, seed=0, k=4, train_score=True),
            Run("few_shot", {"n_demos": 2, "template": "text_label", "n_candidates": 1},
                seed=0, k=4, train_score=True)]
    rows = run_comparison(backend, train, test, runs, tmp_path)
    (record,) = read_test_rows(tmp_path).values()
    assert record["ids"] == [example_id(e) for e in test.examples]
    assert [record["labels"][g] for g in record["golds"]] == [e.label for e in test.examples]
    assert record["majority_label"] in test.labels
    for row in rows:
        assert row["test_sha256"] == test.fingerprint() == record["test_sha256"]
        assert row["train_sha256"] == train.fingerprint() and row["val_sha256"] is None
        lines = read_predictions(tmp_path / row["predictions"])
        assert [line["id"] for line in lines] == record["ids"]
        assert [test.labels.index(line["predicted"]) for line in lines] == row["per_row"]["pred"]
        # the predicted label is the arg-max of the per-label scores kept beside it
        assert all(line["predicted"] == max(line["scores"], key=line["scores"].get)
                   for line in lines)
        correct = sum(line["correct"] for line in lines)
        assert row["score"] == pytest.approx(correct / len(lines))
    zero, few = rows
    assert zero["zero_shot_reference"] and not few["zero_shot_reference"]
    assert few["break_even_reference"] > zero["break_even_reference"] > 0
    # prompt_template chooses on every row it is given; few_shot judges on half of them
    assert (zero["n_fitted"], zero["n_held_out"], zero["val_score"]) == (8, 0, None)
    assert few["n_fitted"] + few["n_held_out"] == 8 and few["n_held_out"] > 0
    assert 0 <= few["val_score"] <= 1 and 0 <= few["train_score"] <= 1


def test_a_trained_method_is_scored_on_the_rows_it_trained_on(backend, tmp_path):
    """The train score leaves out the rows held out for the best-checkpoint choice; the
    validation score is on exactly those."""
    from tailorlm.compare.runner import fit_scores
    from tailorlm.methods import get_method
    from tailorlm.methods.contract import fitted_rows, held_out_rows

    train, _ = split_rows(sentiment_task(8), 6)
    spec = get_method("soft_prompt")
    # refit on every row (the default) leaves nothing held out: the train score is on all of them
    refitted = spec.fit(backend, train, None, spec.config.from_dict(
        {"epochs": 1, "batch_size": 4, "n_virtual": 2}), seed=0)
    assert len(fitted_rows(refitted, train)) == len(train) == refitted.train_result["n_train"]
    assert len(held_out_rows(refitted, train)) == 0
    config = spec.config.from_dict({"epochs": 1, "batch_size": 4, "n_virtual": 2,
                                    "refit": False})
    adapter = spec.fit(backend, train, None, config, seed=0)
    fitted, held = fitted_rows(adapter, train), held_out_rows(adapter, train)
    assert len(fitted) == adapter.train_result["n_train"] and len(held) > 0
    assert not {example_id(e) for e in fitted.examples} & {example_id(e) for e in held.examples}
    scores = fit_scores(backend, adapter, train, None, "accuracy", 0)
    assert (scores["n_fitted"], scores["n_held_out"]) == (len(fitted), len(held))
    assert scores["n_train_scored"] == len(fitted) and scores["n_val_scored"] == len(held)


def test_tailor_eval_writes_a_predictions_file(tmp_path, tiny_model_dir, capsys):
    from tailorlm.cli.main import main

    train, test = split_rows(sentiment_task(6), 4)
    rows = lambda t: [{"text": e.input, "label": e.label} for e in t.examples]  # noqa: E731
    train_file = write_jsonl(tmp_path / "train.jsonl", rows(train))
    test_file = write_jsonl(tmp_path / "test.jsonl", rows(test))
    adapter = tmp_path / "pt"
    assert main(["tune", "--method", "prompt_template", "--model", str(tiny_model_dir),
                 "--train", str(train_file), "--out", str(adapter)]) == 0
    out = tmp_path / "preds.jsonl"
    assert main(["eval", "--adapter", str(adapter), "--test", str(test_file), "--json",
                 "--predictions", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = read_predictions(out)
    assert len(lines) == len(test) and report["predictions"] == str(out)
    assert sum(line["correct"] for line in lines) / len(lines) == pytest.approx(report["score"])


def test_an_unparseable_answer_is_a_wrong_row_not_a_failed_run():
    """An endpoint's generate tier predicts "" for an answer that is no label: per-row outcomes
    give it the index len(labels), which never equals a gold index."""
    from types import SimpleNamespace

    from tailorlm.engine.predictions import per_row

    task = sentiment_task(4)
    preds = [task.examples[0].label, "", task.examples[2].label, ""]
    out = per_row(task, SimpleNamespace(predictions=preds, metric="accuracy"))
    assert out["pred"][1] == out["pred"][3] == len(task.labels)
    assert out["pred"][0] == task.labels.index(task.examples[0].label)
