"""The baselines a score is read against: the majority class and zero-shot.

    majority-class score = the metric of always answering the training data's most frequent
                           label (a tie: the one more frequent in the test rows), on the same
                           test rows (classification only)
    zero-shot score      = the method that declares itself the zero-shot reference
                           (MethodSpec.zero_shot_reference: prompt_template)

A method below the majority-class score has learned less than a constant answer: the report flags
it. (On a three-label task with a 63.5% majority, a full fine-tune at K=16 scored 53.5%.)
"""

from __future__ import annotations

from tailorlm.engine.metrics import get_metric


def majority(record: dict | None, metric: str) -> dict | None:
    """{"label", "score", "n"} from a `test_rows` record; None for generation or no record."""
    if not record or record.get("kind") != "classification" or "golds" not in record:
        return None
    labels, golds = record["labels"], [record["labels"][g] for g in record["golds"]]
    label = record.get("majority_label") or max(labels, key=golds.count)
    score = get_metric(metric).fn([label] * len(golds), golds)
    return {"label": label, "score": float(score), "n": len(golds)}


def flag_below(methods: list[dict], baseline: dict | None) -> None:
    """Mark each method whose mean score is below the majority-class score."""
    for m in methods:
        m["majority_score"] = None if baseline is None else baseline["score"]
        m["below_majority"] = baseline is not None and m["score_mean"] < baseline["score"]


def zero_shot(methods: list[dict]) -> dict | None:
    return next((m for m in methods if m.get("zero_shot_reference")), None)


def break_even_reference(methods: list[dict]) -> dict | None:
    """The method break-even is measured against: the highest declared priority present."""
    ranked = [m for m in methods if (m.get("break_even_reference") or 0) > 0]
    return max(ranked, key=lambda m: m["break_even_reference"]) if ranked else None


def lines(summary: dict) -> list[str]:
    """The baselines as report lines (every report prints them, measured or not)."""
    base = summary.get("baselines") or {}
    maj, zero = base.get("majority"), base.get("zero_shot")
    out = []
    if maj:
        below = [m["method"] for m in summary.get("methods") or [] if m.get("below_majority")]
        out.append(f"majority class (always {maj['label']!r}): {summary.get('metric')} "
                   f"{maj['score']:.3f}" + (f"; below it: {', '.join(below)}" if below
                                            else "; every method is above it"))
    elif summary.get("kind") == "classification":
        out.append("majority class: not known (results from an older tailorlm)")
    out.append(f"zero-shot ({zero['method']}): {summary.get('metric')} {zero['score']:.3f}" if zero
               else "zero-shot: not run (add the zero-shot method, prompt_template, to the plan)")
    return out
