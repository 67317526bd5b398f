"""k-shot sampling and stratified splits: exact counts, and the same rows for the same seed."""

from collections import Counter

import pytest

from tailorlm.data.sample import k_per_class, short_classes, split
from tailorlm.data.task import Example, Task
from tailorlm.errors import TailorError


def make_task(counts: dict[str, int]) -> Task:
    examples = [Example(input=f"{lab} {i}", target=lab, label=lab)
                for lab, n in counts.items() for i in range(n)]
    return Task(name="t", kind="classification", examples=examples, labels=list(counts))


def generation_task(n: int) -> Task:
    return Task(name="g", kind="generation",
                examples=[Example(input=f"in {i}", target=f"out {i}") for i in range(n)])


def inputs(task: Task) -> list[str]:
    return [e.input for e in task.examples]


def test_k_per_class_counts_and_determinism():
    task = make_task({"a": 30, "b": 20, "c": 25})
    s = k_per_class(task, 8, seed=0)
    assert Counter(e.label for e in s.examples) == {"a": 8, "b": 8, "c": 8}
    assert s.labels == task.labels and s.verbalizer == task.verbalizer
    assert inputs(k_per_class(task, 8, seed=0)) == inputs(s)
    other = k_per_class(task, 8, seed=1)
    assert set(inputs(other)) != set(inputs(s))
    assert len(set(inputs(s))) == 24                   # no example drawn twice
    # shuffled: not grouped by label
    assert [e.label for e in s.examples] != sorted(e.label for e in s.examples)


def test_k_per_class_short_class(caplog):
    task = make_task({"a": 10, "b": 3})
    s = k_per_class(task, 5, seed=0)
    assert Counter(e.label for e in s.examples) == {"a": 5, "b": 3}
    assert short_classes(task, 5) == {"b": 3}
    assert "fewer than k=5" in caplog.text and "'b' (3)" in caplog.text


def test_k_per_class_generation_and_bad_k():
    g = generation_task(50)
    s = k_per_class(g, 10, seed=3)
    assert len(s) == 10 and len(set(inputs(s))) == 10
    assert inputs(k_per_class(g, 10, seed=3)) == inputs(s)
    assert len(k_per_class(g, 100, seed=0)) == 50
    for k in (0, -1, 2.5, True):
        with pytest.raises(TailorError, match="at least 1"):
            k_per_class(g, k, seed=0)


def test_split_stratified_fraction():
    task = make_task({"a": 8, "b": 8, "c": 4})
    a, b = split(task, 0.25, seed=0)
    assert Counter(e.label for e in b.examples) == {"a": 2, "b": 2, "c": 1}
    assert Counter(e.label for e in a.examples) == {"a": 6, "b": 6, "c": 3}
    assert sorted(inputs(a) + inputs(b)) == sorted(inputs(task))
    again_a, again_b = split(task, 0.25, seed=0)
    assert inputs(again_a) == inputs(a) and inputs(again_b) == inputs(b)
    assert set(inputs(split(task, 0.25, seed=1)[1])) != set(inputs(b))


def test_split_keeps_every_class_on_both_sides():
    task = make_task({lab: 2 for lab in "abcdefgh"} | {"solo": 1})
    a, b = split(task, 1, seed=0)     # asks for one, but every 2-example class gives one
    assert {e.label for e in b.examples} == set("abcdefgh")
    assert {e.label for e in a.examples} == set("abcdefgh") | {"solo"}
    a, b = split(make_task({"a": 4, "b": 4}), 0.9, seed=0)
    assert Counter(e.label for e in a.examples) == {"a": 1, "b": 1}


def test_split_count_and_generation():
    a, b = split(make_task({"a": 12, "b": 6}), 6, seed=0)
    assert Counter(e.label for e in b.examples) == {"a": 4, "b": 2}
    ga, gb = split(generation_task(10), 3, seed=0)
    assert len(ga) == 7 and len(gb) == 3
    assert sorted(inputs(ga) + inputs(gb)) == sorted(inputs(generation_task(10)))


@pytest.mark.parametrize("size", [0.0, 1.0, 0, 10, "half", True])
def test_split_bad_size(size):
    with pytest.raises(TailorError):
        split(generation_task(10), size, seed=0)
