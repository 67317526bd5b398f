"""Prompt sensitivity: how much a fitted adapter's score moves when only the wording changes.

    variants = the adapter as fitted
             + the adapter read through each rewording in templates.PARAPHRASES (cue word, casing,
               layout, an instruction line)
             + for fixed demonstrations: N_ORDERS other orders of the same demonstrations
    spread   = std and max - min of the score over the variants, on the same rows

Every method gets the same measurement: for prompt methods the rewording is the whole prompt,
for trained ones it is the wording their weights or vectors were trained to answer after. That
tests the claim that tuning makes a model less sensitive to wording (Zhao et al. 2021 report 54%
to 93% on sst2 from demonstration order alone) instead of assuming it.

An adapter offers `reworded(template)`, and `reordered(order)` if it holds fixed demonstrations;
one without `reworded` is reported as not measured. A calibrated prompt is recalibrated for each
wording, as fitting it would have done.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.task import Task
from tailorlm.engine.evaluate import label_scores, quick_score
from tailorlm.methods.calibration import content_free_examples, label_bias
from tailorlm.methods.templates import PARAPHRASES
from tailorlm.models.backend import Backend

N_ORDERS = 3


def variants(adapter, task: Task, seed: int) -> dict[str, object]:
    out = {"as fitted": adapter}
    if not hasattr(adapter, "reworded"):
        return out
    for template in PARAPHRASES[task.kind]:
        out[template.name] = adapter.reworded(template)
    demos = getattr(adapter, "demos", None) or []
    if len(demos) > 1 and hasattr(adapter, "reordered"):
        rng = np.random.default_rng(seed)
        for i in range(N_ORDERS):
            out[f"order_{i + 1}"] = adapter.reordered(list(rng.permutation(len(demos))))
    return out


def measure(backend: Backend, adapter, task: Task, metric: str, seed: int = 0) -> dict:
    """{"scores": {variant: score}, "std", "range", "n_variants", "n"} on `task`'s rows."""
    scores = {}
    for name, variant in variants(adapter, task, seed).items():
        if getattr(variant, "bias", None) is not None and name != "as fitted":
            cf = task.with_examples(content_free_examples())
            raw = variant.with_bias(None)
            variant = raw.with_bias(label_bias(label_scores(backend, raw, cf)))
        scores[name] = quick_score(backend, variant, task, metric)
    values = np.array(list(scores.values()))
    measured = len(values) > 1
    return {"scores": scores, "n": len(task), "n_variants": len(values),
            "std": float(values.std(ddof=1)) if measured else None,
            "range": float(values.max() - values.min()) if measured else None}
