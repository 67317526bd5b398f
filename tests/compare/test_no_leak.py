"""No test-set example reaches training, validation or any choice, for every method.

Every method's `fit` is wrapped: while it runs, each text the model reads (every string
`Backend.encode` tokenizes: training rows, validation prompts, demonstration candidates,
calibration inputs) is recorded, and so are the rows handed to it as train and val. None may hold
a test row's input. The test rows are distinct from the training rows and carry a marker no
training row has, so a leak shows as the marker inside a text read during a fit; the same record
shows the evaluation afterwards did read every test row (the check can see what it looks for).
"""

import dataclasses

import pytest

import tailorlm.compare.runner as runner
from helpers import tiny_backend
from tailorlm.compare.runner import Run, run_comparison
from tailorlm.data.task import Example, Task, example_id
from tailorlm.methods import METHODS
from tailorlm.models.backend import LocalBackend as Backend

POS = ["a great film", "I loved it", "wonderful and fun", "the best movie", "great acting",
       "a joy to watch"]
NEG = ["a bad film", "I hated it", "boring and dull", "the worst movie", "bad acting",
       "a waste of time"]
MARK = "zebra"  # in every test input, in no training input


def _tasks() -> tuple[Task, Task]:
    train = [Example(t, "positive", "positive") for t in POS] + \
        [Example(t, "negative", "negative") for t in NEG]
    test = [Example(f"{MARK} {i}: {t}", label, label) for i, (t, label) in enumerate(
        [("so much fun", "positive"), ("truly moving", "positive"), ("dull mess", "negative"),
         ("a chore", "negative")])]
    return (Task("t", "classification", train), Task("t", "classification", test))


WEIGHT = {"epochs": 1, "batch_size": 4, "bf16": False}
CONFIGS = {"prompt_template": {}, "few_shot": {"n_demos": 2, "n_candidates": 2},
           "instruction_search": {"rounds": 1, "edits_per_round": 2},
           "soft_prompt": {**WEIGHT, "n_virtual": 2}, "prefix": WEIGHT, "lora": WEIGHT,
           "full": WEIGHT, "lora+few_shot": {"weight": WEIGHT, "input": {"n_demos": 2}},
           "lora+soft_prompt": {"weight": WEIGHT, "input": {**WEIGHT, "n_virtual": 2}}}


def test_every_registered_method_is_covered():
    assert set(METHODS) <= set(CONFIGS)


def _recorded(monkeypatch, tmp_path, runs, val=None):
    """Run the comparison with every fit wrapped; (rows, rows handed to fits, texts read)."""
    train, test = _tasks()
    read = {"fit": [], "after": []}
    phase = ["after"]
    handed = []
    real_encode = Backend.encode

    def recording_encode(self, text, *a, **k):
        read[phase[0]].append(text)
        return real_encode(self, text, *a, **k)

    monkeypatch.setattr(Backend, "encode", recording_encode)
    real_get_method = runner.get_method

    def wrapped_get_method(name):
        spec = real_get_method(name)

        def fit(backend, train_, val_, config, **kw):
            handed.append((name, train_, val_))
            phase[0] = "fit"
            try:
                return spec.fit(backend, train_, val_, config, **kw)
            finally:
                phase[0] = "after"
        return dataclasses.replace(spec, fit=fit)

    monkeypatch.setattr(runner, "get_method", wrapped_get_method)
    rows = run_comparison(tiny_backend(), train, test, runs, tmp_path,
                          val=test if val == "test" else None)
    return rows, handed, read


def _leaks(handed, read) -> list[str]:
    _, test = _tasks()
    test_ids = {example_id(e) for e in test.examples}
    out = [f"{name}: test rows handed to fit" for name, train_, val_ in handed
           for task in (train_, val_) if task is not None
           and {example_id(e) for e in task.examples} & test_ids]
    return out + [text for text in read["fit"] if MARK in text]


def test_no_test_example_reaches_any_fit(tmp_path, monkeypatch):
    runs = [Run(name, config, seed=0, k=4, train_score=True, sensitivity=2)
            for name, config in CONFIGS.items()]
    rows, handed, read = _recorded(monkeypatch, tmp_path, runs)
    assert all("score" in r for r in rows), [r.get("reason") for r in rows]
    assert [name for name, *_ in handed] == list(CONFIGS)
    assert _leaks(handed, read) == []
    assert read["fit"]  # the fits read something, and the evaluations read every test row
    for e in _tasks()[1].examples:
        assert any(e.input in text for text in read["after"])


def test_the_check_sees_a_leak(tmp_path, monkeypatch):
    """Handing the test rows in as validation data is caught twice: in what fit was given, and
    in the texts it read while choosing a template."""
    runs = [Run("prompt_template", {}, seed=0, k=4)]
    _, handed, read = _recorded(monkeypatch, tmp_path, runs, val="test")
    leaks = _leaks(handed, read)
    assert leaks[0] == "prompt_template: test rows handed to fit" and len(leaks) > 1
