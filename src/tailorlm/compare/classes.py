"""Where a classifier goes wrong: per-class precision and recall, the confusion matrix, and a few
wrong examples of the recommended method (its first seed's run at the plan's k).

    precision(c) = TP / (TP + FP)   of the rows predicted c, the share that are c
    recall(c)    = TP / (TP + FN)   of the rows that are c, the share predicted c
    confusion[i][j] = rows of gold label i predicted as label j

Counts come from the run's `per_row` predictions and the test set's gold labels in results.jsonl;
the wrong examples' text from the run's predictions file (OUT/predictions/<run>.jsonl) when it is
there. sklearn computes the counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_WRONG = 5  # wrong examples shown


def class_report(rows: list[dict], method: str | None, record: dict | None,
                 out: Path | None = None) -> dict | None:
    """None for generation, no recommendation, or rows without per-row predictions."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if method is None or not record or "golds" not in record:
        return None
    runs = sorted((r for r in rows if r["method"] == method and "pred" in (r.get("per_row") or {})
                   and len(r["per_row"]["pred"]) == len(record["golds"])),
                  key=lambda r: r.get("seed", 0))
    if not runs:
        return None
    run, labels = runs[0], record["labels"]
    gold, pred = np.array(record["golds"]), np.array(run["per_row"]["pred"])
    ids = list(range(len(labels)))
    p, r, f1, support = precision_recall_fscore_support(gold, pred, labels=ids,
                                                        zero_division=0)
    return {
        "method": method, "seed": run.get("seed"), "labels": labels,
        "per_class": [{"label": lab, "precision": float(p[i]), "recall": float(r[i]),
                       "f1": float(f1[i]), "support": int(support[i]),
                       "predicted": int((pred == i).sum())} for i, lab in enumerate(labels)],
        "confusion": confusion_matrix(gold, pred, labels=ids).tolist(),
        "wrong": _wrong(out, run),
    }


def _wrong(out: Path | None, run: dict) -> list[dict]:
    from tailorlm.engine.predictions import read_predictions

    if out is None or not run.get("predictions"):
        return []
    path = Path(out) / run["predictions"]
    if not path.exists():
        return []
    wrong = [line for line in read_predictions(path) if not line.get("correct", True)]
    return [{"id": w["id"], "input": w["input"], "gold": w["gold"], "predicted": w["predicted"]}
            for w in wrong[:N_WRONG]]


def confusion_text(classes: dict, most: int = 12) -> list[str]:
    """The confusion matrix as aligned text (the first `most` labels when there are more)."""
    labels = classes["labels"][:most]
    width = max(6, *(len(lab) for lab in labels))
    head = " " * width + "  " + " ".join(lab[:width].rjust(width) for lab in labels)
    lines = [f"gold \\ predicted ({classes['method']}, seed {classes['seed']})", head]
    for lab, row in zip(labels, classes["confusion"]):
        lines.append(lab[:width].ljust(width) + "  " + " ".join(str(v).rjust(width)
                                                               for v in row[:most]))
    if len(classes["labels"]) > most:
        lines.append(f"(first {most} of {len(classes['labels'])} labels; report.json has all)")
    return lines
