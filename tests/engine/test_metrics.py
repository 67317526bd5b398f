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


# --- paired bootstrap -----------------------------------------------------------------------

from tailorlm.engine.metrics import _macro_f1_resampled, paired_bootstrap  # noqa: E402


def _slow_paired(a, b, gold_ids, n_resamples, seed, level):
    """The paired bootstrap one resample at a time, with the same draws as the fast one."""
    n = a.shape[1]
    rows = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))  # as chunks do
    seeds_a = np.random.default_rng([seed, 1]).integers(0, len(a), size=(n_resamples, len(a)))
    seeds_b = np.random.default_rng([seed, 2]).integers(0, len(b), size=(n_resamples, len(b)))

    def score(outcome, seeds, idx):
        per_seed = []
        for s in seeds:
            if gold_ids is None:
                per_seed.append(np.mean([outcome[s][i] for i in idx]))
            else:
                per_seed.append(macro_f1([str(outcome[s][i]) for i in idx],
                                         [str(gold_ids[i]) for i in idx]))
        return np.mean(per_seed)

    d = np.array([score(a, seeds_a[r], rows[r]) - score(b, seeds_b[r], rows[r])
                  for r in range(n_resamples)])
    return d


@pytest.mark.parametrize("macro", [False, True])
def test_paired_bootstrap_matches_a_slow_reference_loop(macro):
    rng = np.random.default_rng(3)
    n = 40
    gold = rng.integers(0, 3, n)
    if macro:
        a = np.where(rng.random((3, n)) < 0.7, gold, rng.integers(0, 3, (3, n)))
        b = np.where(rng.random((2, n)) < 0.6, gold, rng.integers(0, 3, (2, n)))
        gold_ids = gold
    else:
        a, b, gold_ids = rng.random((3, n)), rng.random((2, n)), None
    fast = paired_bootstrap(a, b, gold_ids=gold_ids, n_resamples=300, seed=7, level=0.95)
    d = _slow_paired(a, b, gold_ids, 300, 7, 0.95)
    assert fast.p_a_wins == pytest.approx(float((d > 0).mean()), abs=1e-12)
    assert fast.low == pytest.approx(float(np.quantile(d, 0.05)), abs=1e-9)
    assert fast.high == pytest.approx(float(np.quantile(d, 0.95)), abs=1e-9)
    assert fast.std == pytest.approx(float(d.std()), abs=1e-9)
    if macro:
        observed = np.mean([macro_f1(list(map(str, p)), list(map(str, gold))) for p in a]) - \
            np.mean([macro_f1(list(map(str, p)), list(map(str, gold))) for p in b])
    else:
        observed = a.mean() - b.mean()
    assert fast.diff == pytest.approx(observed, abs=1e-12)
    assert fast.n_seeds == (3, 2) and fast.n_rows == n


def test_paired_bootstrap_identical_methods_never_win():
    a = (np.arange(50) % 3 == 0).astype(float)[None, :]
    result = paired_bootstrap(a, a.copy())
    assert result.p_a_wins == 0.0 and result.diff == 0.0 and result.low == result.high == 0.0


def test_paired_bootstrap_is_fast_on_a_large_test_set():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 77, 3000)
    a = np.where(rng.random((3, 3000)) < 0.8, gold, rng.integers(0, 77, (3, 3000)))
    b = np.where(rng.random((3, 3000)) < 0.78, gold, rng.integers(0, 77, (3, 3000)))
    start = time.perf_counter()
    paired_bootstrap((a == gold).astype(float), (b == gold).astype(float))
    paired_bootstrap(a, b, gold_ids=gold)
    assert time.perf_counter() - start < 10.0


def test_macro_f1_resampled_agrees_with_sklearn_per_resample():
    rng = np.random.default_rng(1)
    gold, pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
    idx = rng.integers(0, 30, (5, 30))
    fast = _macro_f1_resampled(pred, gold, idx, 4)
    for r in range(5):
        assert fast[r] == pytest.approx(macro_f1(list(map(str, pred[idx[r]])),
                                                 list(map(str, gold[idx[r]]))), abs=1e-12)
