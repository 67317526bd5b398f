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

What an adapter offers for this (rewording, reordering, recalibration) is declared in
methods/contract.py (`wording_variants`, `recalibrated`); an adapter with no wording to change is
reported as not measured. A calibrated prompt is recalibrated for each wording, as fitting it
would have done.
"""

from __future__ import annotations

import numpy as np

from tailorlm.data.task import Task
from tailorlm.engine.evaluate import quick_score
from tailorlm.methods.contract import recalibrated, wording_variants
from tailorlm.methods.templates import PARAPHRASES
from tailorlm.models.backend import Backend

N_ORDERS = 3


def variants(adapter, task: Task, seed: int) -> dict[str, object]:
    return wording_variants(adapter, PARAPHRASES[task.kind], N_ORDERS, seed)


def measure(backend: Backend, adapter, task: Task, metric: str, seed: int = 0) -> dict:
    """{"scores": {variant: score}, "std", "range", "n_variants", "n"} on `task`'s rows."""
    scores = {}
    for name, variant in variants(adapter, task, seed).items():
        if name != "as fitted":
            variant = recalibrated(variant, backend, task)
        scores[name] = quick_score(backend, variant, task, metric)
    values = np.array(list(scores.values()))
    measured = len(values) > 1
    return {"scores": scores, "n": len(task), "n_variants": len(values),
            "std": float(values.std(ddof=1)) if measured else None,
            "range": float(values.max() - values.min()) if measured else None}
