"""Fits a comparison shares: a weight-side fit kept for the hybrid that starts from it.

A comparison fits `lora` and `lora+soft_prompt` on the same rows, seed and config, and the
hybrid's weight side is that same fit. Whichever of the two runs second takes it from here instead
of training it again. Training is deterministic for a seed (tests/methods/test_fit_memo.py fits
twice and compares the weights bit for bit), so what is taken is what would have been trained.

What a fit costs stays what fitting it alone costs: a kept fit carries its seconds and its own
peak memory, and the run that takes it reports them (compare/runner.py, methods/hybrid.py).
Both fit through `fit` here: it takes the kept fit, or makes one and keeps it.

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
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from tailorlm.engine.cost import current_rss_mb, peak_rss_mb

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


def fit(spec, backend, train, val, config, *, seed: int, metric: str | None, work_dir=None,
        resume: bool = False) -> tuple[Any, Kept | None]:
    """`spec`'s fit, taken from here when kept (adapter, the Kept it came from) or made and kept
    (adapter, None). Seconds by the clock and the peak read, not reset: a CostMeter resets the
    process's peak-RSS mark, which would hide this fit's peak from the caller's meter; the mark
    the caller reset before it began is this fit's peak."""
    key = fit_key(spec, backend, train, val, config, seed, metric)
    kept = recall(key)
    if kept is not None:
        return kept.adapter, kept
    started, rss = time.perf_counter(), current_rss_mb()
    adapter = spec.fit(backend, train, val, config, seed=seed, metric=metric,
                       work_dir=work_dir, resume=resume)
    keep(key, adapter, time.perf_counter() - started, peak_rss_mb() - rss)
    return adapter, None
