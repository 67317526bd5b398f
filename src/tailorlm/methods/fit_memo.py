"""Fits a comparison shares: a weight-side fit kept for the hybrid that starts from it.

A comparison fits `lora` and `lora+soft_prompt` on the same rows, seed and config, and the
hybrid's weight side is that same fit. Whichever of the two runs second takes it from here instead
of training it again. Training is deterministic for a seed (tests/methods/test_fit_memo.py fits
twice and compares the weights bit for bit), so what is taken is what would have been trained.

What a fit costs stays what fitting it alone costs: a kept fit carries its seconds and its own
peak memory, and the run that takes it reports them (compare/runner.py, methods/hybrid.py).

Only the methods that declare `MethodSpec.shared_fit` are kept: a LoRA, whose trained weights
are a few MB. A full fine-tune's copy of the model is not held for this. At most KEEP fits are
held, and the oldest goes first. The key is everything the fit reads: the method, its resolved
config, the training and validation rows, the seed, the metric, and the base (its identity, its
sha256 and the model object itself). A kept adapter is a shallow copy taken right after the fit,
so whatever a run binds to it later (a LoRA's merged view) is not held here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

KEEP = 2


@dataclass(frozen=True)
class Kept:
    adapter: Any
    seconds: float  # the fit's wall seconds when it was trained
    peak_mb: float  # its own peak memory then: the process's peak minus the RSS it started at


_KEPT: OrderedDict[str, Kept] = OrderedDict()


def fit_key(spec, backend, train, val, config, seed: int, metric: str | None) -> str | None:
    """The key of this fit, or None where `spec` does not share its fits."""
    if not spec.shared_fit:
        return None
    blob = json.dumps([spec.name, config.to_dict(), train.fingerprint(),
                       val.fingerprint() if val is not None else None, seed, metric,
                       backend.identity, backend.sha256, id(backend.model)],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def recall(key: str | None) -> Kept | None:
    """The kept fit for `key` (its adapter a fresh shallow copy), or None."""
    kept = _KEPT.get(key) if key is not None else None
    if kept is None:
        return None
    _KEPT.move_to_end(key)
    return replace(kept, adapter=copy.copy(kept.adapter))


def keep(key: str | None, adapter, seconds: float, peak_mb: float) -> None:
    if key is None:
        return
    _KEPT[key] = Kept(copy.copy(adapter), float(seconds), float(peak_mb))
    _KEPT.move_to_end(key)
    while len(_KEPT) > KEEP:
        _KEPT.popitem(last=False)


def clear() -> None:
    _KEPT.clear()
