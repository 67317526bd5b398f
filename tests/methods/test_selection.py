"""validation_subset: at most the rows a choice is judged on, whatever the label count."""

import pytest

from tailorlm.data.task import Example, Task
from tailorlm.methods.selection import judged_rows, validation_subset


@pytest.mark.parametrize("n_labels, per_label", [(77, 4), (77, 1), (2, 300), (10, 30)])
def test_validation_subset_returns_at_most_the_rows_asked(n_labels, per_label):
    task = Task("t", "classification", [Example(f"x {lab} {i}", f"l{lab}", f"l{lab}")
                                        for lab in range(n_labels) for i in range(per_label)])
    asked = judged_rows(len(task), n_labels)
    sub = validation_subset(task, seed=0)
    assert len(sub) == asked  # 77 labels x 4 rows: 50 asked, 50 given (77 before)
    assert len({e.input for e in sub.examples}) == len(sub)
