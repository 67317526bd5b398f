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
# ids with the gold ids for macro_f1. A resample is kept as counts, how often each row is drawn
# ((N, R), drawn once per comparison: `row_resamples`), so each seed's score on every resample is
# one product: values @ counts / N, or for macro-F1 the per-label counts one-hot(label).T @ counts
# (sparse). That is `resampled_scores`, (S, R), computed once per method whatever it is compared
# with. Seeds are then combined with an (R, S) weight matrix: how often each seed was drawn, / S.


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


def _prepare(outcome, gold_ids) -> tuple[np.ndarray, np.ndarray | None, int]:
    outcome = np.atleast_2d(np.asarray(outcome))
    if gold_ids is None:
        return outcome.astype(np.float64), None, 0
    gold_ids = np.asarray(gold_ids, np.int64)
    outcome = outcome.astype(np.int64)
    return outcome, gold_ids, int(max(outcome.max(), gold_ids.max())) + 1


def row_resamples(n: int, n_resamples: int = 2000, seed: int = 0) -> list[np.ndarray]:
    """The resamples of n rows as counts: chunks of (n, r) arrays, how many times each row is
    drawn in each resample (one column per resample: the layout the products below read). Resample i's rows are row i of
    `np.random.default_rng(seed).integers(0, n, (n_resamples, n))`: the same for every method
    scored on n rows, which is what pairs them; a comparison draws them once."""
    if n == 0:
        raise TailorError("no shared test rows to compare the methods on")
    out = []
    for idx in _resample_chunks(np.random.default_rng(seed), n, n_resamples):  # (r, n)
        r = idx.shape[0]
        offset = (np.arange(r) * n)[:, None]
        counts = np.bincount((idx + offset).ravel(), minlength=r * n).reshape(r, n)
        # (n, r) contiguous; a row drawn 65,536 times in one resample: never
        out.append(np.ascontiguousarray(counts.T, dtype=np.uint16))
    return out


def resampled_scores(outcome: np.ndarray, *, gold_ids: np.ndarray | None = None,
                     n_resamples: int = 2000, seed: int = 0,
                     resamples: list[np.ndarray] | None = None) -> np.ndarray:
    """(S, R): each seed's score on each of the R resamples of its N rows (`row_resamples`,
    drawn here unless given)."""
    outcome, gold_ids, n_labels = _prepare(outcome, gold_ids)
    if resamples is None:
        resamples = row_resamples(outcome.shape[1], n_resamples, seed)
    return np.concatenate([_per_seed_counts(outcome, counts.astype(np.float64), gold_ids,
                                            n_labels) for counts in resamples], axis=1)


def _per_seed_counts(outcome: np.ndarray, counts: np.ndarray, gold_ids: np.ndarray | None,
                     n_labels: int) -> np.ndarray:
    """(S, r): each seed's score on each resample, from the row counts (N, r). A mean metric is
    values @ counts / N; macro-F1's per-label counts are one-hot(label).T @ counts, a sparse
    product (N nonzeros). Counts are whole numbers, so sums are exact and ties stay ties."""
    n = counts.shape[0]
    if gold_ids is None:
        return outcome @ counts / n  # (S, N) @ (N, r)
    from scipy.sparse import csr_matrix

    def onehot(ids, weights=None):  # (N, K) sparse
        data = np.ones(n) if weights is None else weights.astype(np.float64)
        return csr_matrix((data, (np.arange(n), ids)), shape=(n, n_labels))

    n_gold = (onehot(gold_ids).T @ counts).T  # (r, K)
    out = []
    for pred in outcome:
        n_pred = (onehot(pred).T @ counts).T
        tp = (onehot(gold_ids, pred == gold_ids).T @ counts).T
        denom = n_pred + n_gold  # 2TP + FP + FN
        present = denom > 0
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=present)
        out.append(f1.sum(axis=1) / present.sum(axis=1))
    return np.stack(out)


def observed_score(outcome: np.ndarray, *, gold_ids: np.ndarray | None = None) -> float:
    """The mean over seeds of the metric on all rows."""
    outcome, gold_ids, n_labels = _prepare(outcome, gold_ids)
    everything = np.arange(outcome.shape[1])[None, :]  # (1, N): all rows once
    return float(_per_seed(outcome, everything, gold_ids, n_labels).mean())


def _per_seed(outcome: np.ndarray, idx: np.ndarray, gold_ids: np.ndarray | None,
              n_labels: int) -> np.ndarray:
    """(S, r): each seed's score on each resample of rows `idx` (r, N)."""
    if gold_ids is None:
        return np.stack([row[idx].mean(axis=1) for row in outcome])
    return np.stack([_macro_f1_resampled(row, gold_ids, idx, n_labels) for row in outcome])


def paired_from_resampled(fa: np.ndarray, fb: np.ndarray, observed_a: float, observed_b: float,
                          *, n_rows: int, seed: int = 0, level: float = 0.95) -> PairedResult:
    """Combine two methods' (S, R) resampled scores (same rows per resample) into the paired
    result: each resample redraws a's seeds from `default_rng([seed, 1])`, b's from
    `default_rng([seed, 2])`, and averages the drawn seeds' scores."""
    if not 0.5 <= level < 1:
        raise TailorError(f"the tie level must be from 0.5 to below 1 (e.g. 0.95), got {level}")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"resample counts differ: {fa.shape[1]} and {fb.shape[1]}")
    r = fa.shape[1]
    wa = _seed_weights(np.random.default_rng([seed, 1]), fa.shape[0], r)  # (R, S_a)
    wb = _seed_weights(np.random.default_rng([seed, 2]), fb.shape[0], r)  # (R, S_b)
    d = (wa * fa.T).sum(axis=1) - (wb * fb.T).sum(axis=1)  # (R,)
    low, high = np.quantile(d, [1 - level, level])
    return PairedResult(diff=observed_a - observed_b, low=float(low), high=float(high),
                        p_a_wins=float((d > 0).mean()), std=float(d.std()), n_rows=n_rows,
                        n_seeds=(fa.shape[0], fb.shape[0]), n_resamples=r, level=level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, gold_ids: np.ndarray | None = None,
                     n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> PairedResult:
    """Paired bootstrap of score(a) - score(b) over shared rows, and over seeds where there are
    several. `a`, `b`: (S_a, N), (S_b, N) per-row values, or predicted label ids when `gold_ids`
    (N,) is given (macro_f1). Draws: the rows from `default_rng(seed)` (resampled_scores), the
    seeds from `default_rng([seed, 1])` and `([seed, 2])` (paired_from_resampled)."""
    a, b = np.atleast_2d(np.asarray(a)), np.atleast_2d(np.asarray(b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired rows differ: {a.shape[1]} and {b.shape[1]}")
    if not 0.5 <= level < 1:
        raise TailorError(f"the tie level must be from 0.5 to below 1 (e.g. 0.95), got {level}")
    # (macro_f1 averages over the labels present in a resample, so each method may count its
    # own label space: bins no row falls in change nothing)
    kw = dict(gold_ids=gold_ids, n_resamples=n_resamples, seed=seed)
    return paired_from_resampled(resampled_scores(a, **kw), resampled_scores(b, **kw),
                                 observed_score(a, gold_ids=gold_ids),
                                 observed_score(b, gold_ids=gold_ids), n_rows=a.shape[1],
                                 seed=seed, level=level)
