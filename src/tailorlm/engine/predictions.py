"""Per-row outcomes of an evaluation: the predictions file, and the compact form results keep.

A predictions file (`OUT/predictions/<run>.jsonl`, `tailor eval --predictions FILE`) has one line
per test row, in test order:

    {"id": "3f2a...", "input": "...", "gold": "positive", "predicted": "negative",
     "correct": false, "scores": {"negative": -0.41, "positive": -1.09}}      classification
    {"id": "...", "input": "...", "gold": ["ref 1", "ref 2"], "predicted": "...",
     "score": 0.62}                                                             generation

`id` is `data.task.example_id`: a hash of the row's content, so the same row has the same id in
every file. `scores` are the adjusted label scores the prediction is the arg-max of.

`per_row(...)` is what a results row keeps so that `tailor recommend` can run the paired
bootstrap without the model: predicted label indices (classification: enough for accuracy and
macro_f1 given the golds, kept once per test set: `test_rows(...)`) or the metric's per-row
values (generation).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tailorlm.data.task import Task, example_id
from tailorlm.engine.metrics import get_metric


def references(task: Task) -> list:
    if task.kind == "classification":
        return [e.label for e in task.examples]
    return [list(e.references) or [e.target] for e in task.examples]


def per_row(task: Task, evaluation) -> dict:
    """{"pred": [label index]} (classification) or {"values": [metric per row]} (generation).

    An answer that is no label (an endpoint's unparseable reply, predicted "") gets the index
    len(labels): never the gold, so it counts wrong, as the metric counts it."""
    if task.kind == "classification":
        index = {label: i for i, label in enumerate(task.labels)}
        return {"pred": [index.get(p, len(task.labels)) for p in evaluation.predictions]}
    values = get_metric(evaluation.metric).per_example(evaluation.predictions, references(task))
    return {"values": [round(float(v), 6) for v in values]}


def test_rows(test: Task, train: Task | None = None) -> dict:
    """What every run on these test rows shares: ids, gold label indices and the label set, and
    the training data's most frequent label (the majority-class baseline)."""
    out = {"test_sha256": test.fingerprint(), "kind": test.kind,
           "n": len(test), "ids": [example_id(e) for e in test.examples]}
    if test.kind == "classification":
        out["labels"] = list(test.labels)
        out["golds"] = [test.labels.index(e.label) for e in test.examples]
        pool = train if train is not None and len(train) else test
        counts = Counter(e.label for e in pool.examples)
        seen = Counter(e.label for e in test.examples)
        # the training data's most frequent label; a tie (a balanced training file) goes to the
        # label more frequent in the test rows: the baseline is a floor to read scores against,
        # not a method, so the better constant answer is the honest floor
        out["majority_label"] = max(test.labels, key=lambda lab: (counts.get(lab, 0),
                                                                  seen.get(lab, 0)))
    return out


def prediction_lines(task: Task, evaluation) -> list[dict]:
    refs = references(task)
    lines = []
    if task.kind == "classification":
        scores = evaluation.label_scores
        for i, (e, pred) in enumerate(zip(task.examples, evaluation.predictions)):
            line = {"id": example_id(e), "input": e.input, "gold": e.label, "predicted": pred,
                    "correct": pred == e.label}
            if scores is not None:
                line["scores"] = {lab: round(float(s), 6) for lab, s in zip(task.labels,
                                                                            scores[i])}
            lines.append(line)
        return lines
    values = get_metric(evaluation.metric).per_example(evaluation.predictions, refs)
    return [{"id": example_id(e), "input": e.input, "gold": ref, "predicted": pred,
             "score": round(float(v), 6)}
            for e, ref, pred, v in zip(task.examples, refs, evaluation.predictions, values)]


def write_predictions(path: str | Path, task: Task, evaluation) -> Path:
    """Write the predictions file atomically (aside, then renamed); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in prediction_lines(task, evaluation):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_predictions(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]
