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


# --- paired bootstrap: is one method really better than another? ------------------------------
#
# Every method of a comparison is scored on the same test rows, so the question "is A better than
# B?" is asked of the same rows for both: each resample draws one set of row indices and scores
# A and B on it (a paired bootstrap; the rows' own difficulty cancels out of the difference).
# Where a method ran with several seeds, each resample also redraws its seeds with replacement
# and averages their scores, so the seed-to-seed spread is in the interval too:
#
#     for r in 1..R:   rows_r  ~ N row indices with replacement (shared by A and B)
#                      seeds_A ~ S_A of A's seeds with replacement; seeds_B likewise
#                      d_r = mean_{s in seeds_A} metric(A_s on rows_r) - mean_{s in seeds_B} ...
#     p(A wins) = fraction of d_r > 0;   interval = percentiles of d_r
#
# Inputs are per-row outcomes, one row per seed: (S, N) per-row metric values for a metric that
# is a mean over rows (accuracy: 1 where the prediction is the gold), or (S, N) predicted label
# ids with the gold ids for macro_f1. Each seed's resampled scores are computed for all resamples
# at once (a gather and a mean, or _macro_f1_resampled's bincounts); seeds are then combined with
# an (R, S) weight matrix: how often each seed was drawn, over S.


@dataclass(frozen=True)
class PairedResult:
    diff: float  # observed score(a) - score(b), each the mean over its seeds on all rows
    low: float  # the resampled differences' (1 - level) quantile
    high: float  # and their `level` quantile: low > 0 exactly when a wins in >= level of them
    p_a_wins: float  # fraction of resamples where a scored strictly higher
    std: float  # standard deviation of the resampled differences
    n_rows: int
    n_seeds: tuple[int, int]
    n_resamples: int
    level: float


def _seed_weights(rng: np.random.Generator, n_seeds: int, n_resamples: int) -> np.ndarray:
    """(R, S): how often each of S seeds is drawn in each resample (S draws), divided by S."""
    draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))  # (R, S)
    counts = np.zeros((n_resamples, n_seeds))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts / n_seeds


def _per_seed(outcome: np.ndarray, idx: np.ndarray, gold_ids: np.ndarray | None,
              n_labels: int) -> np.ndarray:
    """(S, r): each seed's score on each resample of rows `idx` (r, N)."""
    if gold_ids is None:
        return np.stack([row[idx].mean(axis=1) for row in outcome])
    return np.stack([_macro_f1_resampled(row, gold_ids, idx, n_labels) for row in outcome])


def _observed(outcome: np.ndarray, gold_ids: np.ndarray | None, n_labels: int) -> float:
    everything = np.arange(outcome.shape[1])[None, :]  # (1, N): all rows once
    return float(_per_seed(outcome, everything, gold_ids, n_labels).mean())


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, gold_ids: np.ndarray | None = None,
                     n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> PairedResult:
    """Paired bootstrap of score(a) - score(b) over shared rows, and over seeds where there are
    several. `a`, `b`: (S_a, N), (S_b, N) per-row values, or predicted label ids when `gold_ids`
    (N,) is given (macro_f1). Draw order (so a slow loop can reproduce it exactly): a's seed
    weights, b's seed weights, then the row indices of `np.random.default_rng(seed)`.
    """
    if not 0.5 <= level < 1:
        raise TailorError(f"the tie level must be from 0.5 to below 1 (e.g. 0.95), got {level}")
    a, b = np.atleast_2d(np.asarray(a)), np.atleast_2d(np.asarray(b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired rows differ: {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    if n == 0:
        raise TailorError("no shared test rows to compare the methods on")
    n_labels = 0
    if gold_ids is not None:
        a, b, gold_ids = a.astype(np.int64), b.astype(np.int64), np.asarray(gold_ids, np.int64)
        n_labels = int(max(a.max(), b.max(), gold_ids.max())) + 1
    rng = np.random.default_rng(seed)
    wa = _seed_weights(rng, a.shape[0], n_resamples)  # (R, S_a)
    wb = _seed_weights(rng, b.shape[0], n_resamples)  # (R, S_b)
    diffs, start = [], 0
    for idx in _resample_chunks(rng, n, n_resamples):  # (r, N)
        stop = start + idx.shape[0]
        score_a = (wa[start:stop] * _per_seed(a, idx, gold_ids, n_labels).T).sum(axis=1)
        score_b = (wb[start:stop] * _per_seed(b, idx, gold_ids, n_labels).T).sum(axis=1)
        diffs.append(score_a - score_b)
        start = stop
    d = np.concatenate(diffs)  # (R,)
    low, high = np.quantile(d, [1 - level, level])
    return PairedResult(diff=_observed(a, gold_ids, n_labels) - _observed(b, gold_ids, n_labels),
                        low=float(low), high=float(high), p_a_wins=float((d > 0).mean()),
                        std=float(d.std()), n_rows=n, n_seeds=(a.shape[0], b.shape[0]),
                        n_resamples=n_resamples, level=level)
