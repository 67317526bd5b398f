import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from tailorlm.engine.metrics import (
    METRICS,
    accuracy,
    bootstrap_ci,
    chrf,
    exact_match,
    get_metric,
    macro_f1,
    rouge_l,
)
from tailorlm.errors import TailorError

GOLDS = ["a", "a", "a", "b", "b", "c"]
PREDS = ["a", "a", "b", "b", "c", "c"]


def test_accuracy_hand_computed():
    assert accuracy(PREDS, GOLDS) == pytest.approx(4 / 6)


def test_macro_f1_hand_computed():
    # F1 = 2TP / (2TP + FP + FN) per label:
    #   a: TP=2 FP=0 FN=1 -> 4/5;  b: TP=1 FP=1 FN=1 -> 2/4;  c: TP=1 FP=1 FN=0 -> 2/3
    expected = (4 / 5 + 2 / 4 + 2 / 3) / 3
    assert macro_f1(PREDS, GOLDS) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.655556, abs=1e-6)


def test_macro_f1_counts_labels_seen_only_in_predictions():
    # a: TP=1 FP=0 FN=1 -> 2/3;  z (never gold): TP=0 FP=1 -> 0.  Mean over {a, z} = 1/3.
    assert macro_f1(["a", "z"], ["a", "a"]) == pytest.approx(1 / 3, abs=1e-12)


def test_exact_match_normalises_whitespace_and_case_only():
    preds = ["  Paris\n  France ", "Paris", "Paris."]
    refs = [["paris france"], ["Lyon", "PARIS"], ["Paris"]]
    assert exact_match(preds, refs) == pytest.approx(2 / 3)


def test_rouge_l_known_pairs():
    # pred "the cat sat" (3 words), ref "the cat is on the mat" (6 words): LCS = "the cat" = 2.
    # P = 2/3, R = 2/6 = 1/3, F = 2PR / (P + R) = (4/9) / 1 = 4/9.
    assert rouge_l(["the cat sat"], [["the cat is on the mat"]]) == pytest.approx(4 / 9)
    # pred and ref both 6 words, LCS = "the cat on the mat" = 5: P = R = F = 5/6.
    assert rouge_l(["the cat sat on the mat"], [["the cat is on the mat"]]) == pytest.approx(5 / 6)
    # The best reference counts.
    assert rouge_l(["the cat sat"], [["the cat is on the mat", "The cat sat"]]) == pytest.approx(1.0)


def test_chrf_identical_and_disjoint():
    assert chrf(["the quick brown fox"], [["the quick brown fox"]]) == pytest.approx(1.0)
    assert chrf(["abc def"], [["xyz uvw"]]) == pytest.approx(0.0, abs=1e-6)
    assert chrf(["abc def"], [["xyz uvw", "abc def"]]) == pytest.approx(1.0)


def test_length_mismatch_and_empty_input():
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(TailorError):
        accuracy([], [])


def test_registry_and_unknown_name():
    assert set(METRICS) == {"accuracy", "macro_f1", "exact_match", "rouge_l", "chrf"}
    assert get_metric("macro_f1").per_example is None
    assert get_metric("chrf").kind == "generation"
    with pytest.raises(TailorError, match="accuracy, macro_f1, exact_match, rouge_l, chrf"):
        get_metric("bleu")


@pytest.mark.parametrize("name", [n for n, m in METRICS.items() if m.per_example is not None])
def test_per_example_mean_is_the_metric(name):
    metric = get_metric(name)
    if metric.kind == "classification":
        preds, refs = PREDS, GOLDS
    else:
        preds = ["the cat sat", "a dog ran", "hello"]
        refs = [["the cat is on the mat"], ["A dog ran", "dogs run"], ["goodbye"]]
    assert metric.per_example(preds, refs).mean() == pytest.approx(metric.fn(preds, refs), abs=1e-12)


def _noisy_labels(n: int, seed: int = 1, labels: str = "abcde") -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    golds = [labels[i] for i in rng.integers(0, len(labels), n)]
    preds = [g if rng.random() < 0.7 else labels[rng.integers(0, len(labels))] for g in golds]
    return preds, golds


@pytest.mark.parametrize("name", ["accuracy", "macro_f1"])
def test_bootstrap_contains_estimate_and_narrows_with_data(name):
    preds, golds = _noisy_labels(100)
    low, high = bootstrap_ci(name, preds, golds)
    assert low < get_metric(name).fn(preds, golds) < high
    big_low, big_high = bootstrap_ci(name, preds * 10, golds * 10)
    # Ten times the data: about sqrt(10) ~ 3.2 times narrower.
    assert (big_high - big_low) < (high - low) / 2


def test_bootstrap_deterministic_by_seed():
    preds, golds = _noisy_labels(200)
    assert bootstrap_ci("macro_f1", preds, golds, seed=3) == bootstrap_ci("macro_f1", preds, golds, seed=3)
    assert bootstrap_ci("accuracy", preds, golds, seed=3) == bootstrap_ci("accuracy", preds, golds, seed=3)
    assert bootstrap_ci("accuracy", preds, golds, seed=3) != bootstrap_ci("accuracy", preds, golds, seed=4)


def test_bootstrap_accuracy_matches_slow_loop():
    preds, golds = _noisy_labels(300)
    n, r = len(preds), 500
    rng = np.random.default_rng(7)
    stats = []
    for _ in range(r):
        idx = rng.integers(0, n, size=n)
        stats.append(sum(preds[i] == golds[i] for i in idx) / n)
    expected = np.percentile(stats, [2.5, 97.5])
    got = bootstrap_ci("accuracy", preds, golds, n_resamples=r, seed=7)
    assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_macro_f1_matches_sklearn_loop():
    preds, golds = _noisy_labels(60, labels="abcdefgh")  # few examples, so resamples miss labels
    n, r = len(preds), 50
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(r):
        idx = rng.integers(0, n, size=n)
        stats.append(f1_score([golds[i] for i in idx], [preds[i] for i in idx], average="macro", zero_division=0))
    expected = np.percentile(stats, [2.5, 97.5])
    got = bootstrap_ci("macro_f1", preds, golds, n_resamples=r, seed=0)
    assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_macro_f1_is_fast():
    preds, golds = _noisy_labels(2000)
    start = time.perf_counter()
    bootstrap_ci("macro_f1", preds, golds, n_resamples=1000)
    assert time.perf_counter() - start < 2.0


def test_bootstrap_generation_metric():
    preds = ["the cat sat", "a dog ran", "hello", "yes"] * 5
    refs = [["the cat is on the mat"], ["a dog ran"], ["goodbye"], ["yes"]] * 5
    low, high = bootstrap_ci("rouge_l", preds, refs, n_resamples=200)
    assert 0 <= low <= rouge_l(preds, refs) <= high <= 1


def test_bootstrap_rejects_bad_confidence():
    with pytest.raises(TailorError, match="confidence"):
        bootstrap_ci("accuracy", PREDS, GOLDS, confidence=95)
