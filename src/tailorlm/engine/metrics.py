"""Task metrics, and how sure we are of them.

Classification (one gold label per example):

- accuracy: the fraction of examples whose predicted label is the gold label.
- macro_f1: the F1 of each label, F1 = 2·TP / (2·TP + FP + FN), averaged with equal weight over the
  labels seen in golds or predictions. A rare label counts as much as a common one, so a model that
  always answers the majority label scores well on accuracy and badly here. sklearn computes it.

Generation (each example has one or more reference texts; an example scores its best reference):

- exact_match: 1 if the prediction equals a reference after trimming, collapsing runs of whitespace
  and ignoring case; else 0.
- rouge_l: ROUGE-L F-measure (Lin 2004), from the longest common subsequence (LCS) of words:
  P = LCS/len(pred), R = LCS/len(ref), F = 2PR/(P+R). Words are Porter-stemmed. rouge-score computes it.
- chrf: chrF (Popović 2015), an F-score (β=2, recall weighted) over character n-grams, n = 1..6,
  scaled here to 0..1. Kinder than word overlap to paraphrase and morphology. sacrebleu computes it.

Why a bootstrap: a score on 200 test examples is itself a sample. Two methods 2 points apart may be
noise. The percentile bootstrap (Efron 1979) redraws the test set with replacement many times,
rescores each redraw, and reports the middle 95% of those scores as the interval. Metrics that are a
mean of per-example scores (all but macro_f1) are scored once per example; each redraw is then a
mean over an index matrix. macro_f1 is not a mean over examples, so each redraw recounts per-label
true positives and predicted/gold totals, done for all redraws at once with `np.bincount`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from sklearn.metrics import f1_score

from tailorlm.errors import TailorError

MetricKind = Literal["classification", "generation"]
# Golds are list[str] for classification and list[list[str]] (references) for generation.
Refs = Sequence[str] | Sequence[Sequence[str]]


def _check(preds: Sequence, refs: Sequence) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise TailorError("no examples to score; give the evaluation at least one example")


# --- classification -------------------------------------------------------------------------


def _accuracy_per_example(preds: Sequence[str], golds: Sequence[str]) -> np.ndarray:
    _check(preds, golds)
    return np.array([p == g for p, g in zip(preds, golds)], dtype=np.float64)


def accuracy(preds: list[str], golds: list[str]) -> float:
    return float(_accuracy_per_example(preds, golds).mean())


def macro_f1(preds: list[str], golds: list[str]) -> float:
    _check(preds, golds)
    labels = sorted(set(golds) | set(preds))
    return float(f1_score(golds, preds, labels=labels, average="macro", zero_division=0))


# --- generation -----------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).casefold()


def _exact_match_per_example(preds: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    _check(preds, references)
    return np.array(
        [any(_normalise(p) == _normalise(r) for r in refs) for p, refs in zip(preds, references)],
        dtype=np.float64,
    )


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=True)


def _rouge_l_per_example(preds: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    _check(preds, references)
    scorer = _rouge_scorer()
    # RougeScorer.score takes (target, prediction), in that order.
    return np.array(
        [max(scorer.score(r, p)["rougeL"].fmeasure for r in refs) for p, refs in zip(preds, references)],
        dtype=np.float64,
    )


@lru_cache(maxsize=1)
def _chrf_scorer():
    from sacrebleu.metrics import CHRF

    return CHRF()


def _chrf_per_example(preds: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    _check(preds, references)
    scorer = _chrf_scorer()
    return np.array(
        [max(scorer.sentence_score(p, [r]).score for r in refs) / 100.0 for p, refs in zip(preds, references)],
        dtype=np.float64,
    )


def exact_match(preds: list[str], references: list[list[str]]) -> float:
    return float(_exact_match_per_example(preds, references).mean())


def rouge_l(preds: list[str], references: list[list[str]]) -> float:
    return float(_rouge_l_per_example(preds, references).mean())


def chrf(preds: list[str], references: list[list[str]]) -> float:
    return float(_chrf_per_example(preds, references).mean())


# --- the metrics by name -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A named metric. `per_example(preds, refs) -> np.ndarray` is set when `fn` is its mean."""

    name: str
    fn: Callable[[list[str], Refs], float]
    kind: MetricKind
    per_example: Callable[[Sequence[str], Refs], np.ndarray] | None = None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy, "classification", _accuracy_per_example),
        Metric("macro_f1", macro_f1, "classification", None),
        Metric("exact_match", exact_match, "generation", _exact_match_per_example),
        Metric("rouge_l", rouge_l, "generation", _rouge_l_per_example),
        Metric("chrf", chrf, "generation", _chrf_per_example),
    )
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise TailorError(f"unknown metric {name!r}; choose one of: {', '.join(METRICS)}") from None


# --- bootstrap ------------------------------------------------------------------------------

# Resample rows are drawn in chunks so the index matrix stays near 16M entries (128 MB) however
# large the test set. Drawing rows in chunks gives the same indices as drawing them all at once.
_CHUNK_ENTRIES = 1 << 24


def _resample_chunks(rng: np.random.Generator, n: int, n_resamples: int):
    rows = max(1, _CHUNK_ENTRIES // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))  # (R, n)


def _macro_f1_resampled(pred_ids: np.ndarray, gold_ids: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of each row of `idx`, averaged over the labels present in that resample (as sklearn)."""
    r = idx.shape[0]
    offset = (np.arange(r) * k)[:, None]  # (R, 1): row r counts into bins r*k .. r*k+k-1
    p, g = pred_ids[idx], gold_ids[idx]  # (R, n)
    hit = (p == g).ravel()
    tp = np.bincount((g + offset).ravel(), weights=hit, minlength=r * k).reshape(r, k)
    n_pred = np.bincount((p + offset).ravel(), minlength=r * k).reshape(r, k)
    n_gold = np.bincount((g + offset).ravel(), minlength=r * k).reshape(r, k)
    denom = n_pred + n_gold  # 2TP + FP + FN
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros((r, k)), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def bootstrap_ci(
    metric_name: str,
    preds: Sequence[str],
    refs: Refs,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over examples.

    The resamples are the rows of `np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`,
    so the interval is a pure function of the inputs and the seed.
    """
    if not 0 < confidence < 1:
        raise TailorError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if n_resamples < 1:
        raise TailorError(f"n_resamples must be at least 1, got {n_resamples}")
    metric = get_metric(metric_name)
    _check(preds, refs)
    n = len(preds)
    rng = np.random.default_rng(seed)

    if metric.per_example is not None:
        scores = metric.per_example(preds, refs)  # (n,)
        stats = np.concatenate([scores[idx].mean(axis=1) for idx in _resample_chunks(rng, n, n_resamples)])
    else:
        labels = sorted(set(refs) | set(preds))
        to_id = {label: i for i, label in enumerate(labels)}
        pred_ids = np.array([to_id[p] for p in preds])
        gold_ids = np.array([to_id[g] for g in refs])
        stats = np.concatenate(
            [
                _macro_f1_resampled(pred_ids, gold_ids, idx, len(labels))
                for idx in _resample_chunks(rng, n, n_resamples)
            ]
        )

    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)
