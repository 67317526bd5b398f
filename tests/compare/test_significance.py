"""The tie rule on hand-built result sets: the paired bootstrap over shared test rows and seeds,
from results rows alone (per-row outcomes + the test set's record)."""

import numpy as np
import pytest

from tailorlm.compare.recommend import Constraints, recommend
from tailorlm.compare.report import markdown
from tailorlm.compare.significance import Significance
from tailorlm.compare.summary import summarize


def _rows(method, family, per_seed_preds, fit=1.0, ms=10.0, test="t1"):
    """Results rows of one method: one per seed, classification predictions as label indices."""
    return [{"method": method, "family": family, "side": "input", "where": "local", "task": "t",
             "model": "m", "metric": "accuracy", "score": None, "score_ci": None,
             "n_eval": len(pred), "seed": seed, "k": 4, "n_train": 8, "fit_seconds": fit,
             "latency_ms_per_query": ms, "prompt_tokens_per_query": 30, "trainable_params": 0,
             "total_params": 10**6, "artifact_bytes": 100, "peak_rss_mb": 100.0,
             "train_sha256": "a", "val_sha256": None, "test_sha256": test,
             "per_row": {"pred": [int(p) for p in pred]}}
            for seed, pred in enumerate(per_seed_preds)]


def _record(golds, test="t1", labels=("neg", "pos"), majority="neg"):
    return {test: {"test_sha256": test, "kind": "classification",
                   "labels": list(labels), "golds": [int(g) for g in golds],
                   "majority_label": majority, "n": len(golds), "ids": []}}


def _with_scores(rows, golds):
    for r in rows:
        r["score"] = float(np.mean(np.array(r["per_row"]["pred"]) == golds))
        r["score_ci"] = [r["score"] - 0.05, r["score"] + 0.05]
    return rows


def _predictions(golds, n_right, rng):
    """Predictions that get exactly n_right rows right, the right ones at random."""
    pred = (golds + 1) % (golds.max() + 1)  # wrong everywhere
    right = rng.choice(len(golds), n_right, replace=False)
    pred[right] = golds[right]
    return pred


PLAN = {"resolved": {"k": 4, "data": {"train_sha256": "a", "val_sha256": None,
                                      "test_sha256": "t1"}},
        "costs": {"cpu_hour_usd": 3.6, "queries_per_day": 1000}}


def _summary(rows, golds, plan=PLAN, constraints=None):
    return summarize(_with_scores(rows, golds), plan, constraints, records=_record(golds))


def test_two_methods_a_point_apart_on_50_rows_tie():
    # generation-style per-row values: A averages 0.01 higher than B on the same 50 rows
    rng = np.random.default_rng(0)
    b = rng.random((3, 50))
    a = np.clip(b + 0.01 + rng.normal(0, 0.05, (3, 50)), 0, 1)
    sig = Significance({"a": a, "b": b})
    result = sig.compare("a", "b")
    assert result.diff == pytest.approx(a.mean() - b.mean())
    assert 0 < result.diff < 0.02 and result.p_a_wins < 0.95  # tie
    # through results rows: accuracy 0.01 apart on 50 rows (two seeds each, 1 row apart in all)
    golds = np.array([0, 1] * 25)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 40, rng), _predictions(golds, 40, rng)],
                 fit=0.0, ms=10.0)
    rows += _rows("lora", "fine tuning", [_predictions(golds, 41, rng),
                                          _predictions(golds, 40, rng)], fit=100.0)
    s = _summary(rows, golds)
    rec = s["recommendation"]
    assert rec["best"] == "lora" and rec["vs_best"]["few_shot"]["tied"]
    assert rec["vs_best"]["few_shot"]["paired"] and rec["vs_best"]["few_shot"]["n_rows"] == 50
    assert rec["vs_best"]["few_shot"]["diff"] == pytest.approx(0.01)
    # tied, so the cheaper at 1,000 queries a day wins: few_shot (no fit), and it is flagged
    assert rec["method"] == "few_shot"
    flag = next(f for f in rec["flags"] if "not separable" in f)
    assert flag.startswith("few_shot is not separable from lora on 50 test rows")
    assert flag.endswith("run with more test rows or seeds")
    assert any("could not be told apart" in r or "not separable from it" in r
               for r in rec["reasons"])
    md = markdown(s)
    assert "not separable from lora on 50 test rows" in md
    assert "## Is the best really better?" in md
    assert "| few_shot | 0.010 |" in md and "| 50 x 2/2 | tied |" in md


def test_five_points_apart_on_1800_rows_do_not_tie():
    rng = np.random.default_rng(1)
    golds = np.array([0, 1] * 900)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 1440, rng) for _ in range(3)],
                 fit=0.0, ms=50.0)  # 0.80
    rows += _rows("lora", "fine tuning", [_predictions(golds, 1530, rng) for _ in range(3)],
                  fit=100.0)  # 0.85
    rec = _summary(rows, golds)["recommendation"]
    cmp = rec["vs_best"]["few_shot"]
    assert not cmp["tied"] and cmp["p_a_wins"] >= 0.95 and cmp["low"] > 0
    assert cmp["diff"] == pytest.approx(0.05) and cmp["n_seeds"] == [3, 3]
    assert rec["method"] == "lora" and rec["flags"] == []


def test_a_one_seed_best_is_flagged():
    rng = np.random.default_rng(2)
    golds = np.array([0, 1] * 900)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 1440, rng) for _ in range(3)],
                 fit=0.0, ms=50.0)
    rows += _rows("lora", "fine tuning", [_predictions(golds, 1530, rng)], fit=100.0)
    s = _summary(rows, golds)
    rec = s["recommendation"]
    assert rec["method"] == "lora"
    assert any("measured on one seed" in f and "run with more seeds" in f for f in rec["flags"])
    assert rec["reasons"][-len(rec["flags"]):] == rec["flags"]  # the reasons end with them
    assert "measured on one seed" in markdown(s)


def test_the_tie_level_is_a_plan_key():
    rng = np.random.default_rng(3)
    golds = np.array([0, 1] * 100)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 160, rng)], fit=0.0, ms=50.0)
    rows += _rows("lora", "fine tuning", [_predictions(golds, 170, rng)], fit=100.0)
    strict = _summary([dict(r) for r in rows], golds)["recommendation"]["vs_best"]["few_shot"]
    p = strict["p_a_wins"]
    assert 0.5 < p < 0.999
    loose = {**PLAN, "eval": {"tie_level": max(0.5, p - 0.05)}}
    tight = {**PLAN, "eval": {"tie_level": min(0.999, p + 0.001)}}
    assert not _summary([dict(r) for r in rows], golds, loose)["recommendation"]["vs_best"][
        "few_shot"]["tied"]
    assert _summary([dict(r) for r in rows], golds, tight)["recommendation"]["vs_best"][
        "few_shot"]["tied"]


def test_constraints_change_the_best_the_tie_is_judged_against():
    rng = np.random.default_rng(4)
    golds = np.array([0, 1] * 900)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 1440, rng)], fit=0.0, ms=50.0)
    rows += _rows("prompt_template", "prompt", [_predictions(golds, 1442, rng)], fit=0.0)
    rows += _rows("lora", "fine tuning", [_predictions(golds, 1530, rng)], fit=100.0)
    rec = _summary(rows, golds, constraints=Constraints(api_only=True))["recommendation"]
    assert rec["best"] == "prompt_template" and "lora" in rec["excluded"]
    assert rec["vs_best"]["few_shot"]["tied"]
    assert rec["constraints_applied"] == [{"flag": "--api-only", "excludes": ["lora"]}]


def test_rows_of_other_data_are_left_out():
    rng = np.random.default_rng(5)
    golds = np.array([0, 1] * 50)
    rows = _rows("few_shot", "prompt", [_predictions(golds, 80, rng)])
    rows += _rows("lora", "fine tuning", [_predictions(golds, 99, rng)], test="t0")  # old data
    s = _summary(rows, golds)
    assert [m["method"] for m in s["methods"]] == ["few_shot"]
    assert s["rows_of_other_data"] == 1


def test_recommend_without_outcomes_uses_the_interval():
    ms = [{"method": "a", "score_mean": 0.80, "score_std": 0.0, "n_seeds": 1,
           "score_cis": [[0.75, 0.85]], "family": "prompt"},
          {"method": "b", "score_mean": 0.76, "score_std": 0.0, "n_seeds": 1,
           "score_cis": [[0.7, 0.8]], "family": "prompt"}]
    rec = recommend(ms, Constraints())
    assert rec["vs_best"]["b"]["tied"] and not rec["vs_best"]["b"]["paired"]
    assert any("no paired test" in f for f in rec["flags"])


def test_the_majority_class_and_zero_shot_are_baselines_and_a_method_below_is_flagged():
    rng = np.random.default_rng(6)
    golds = np.array([0] * 120 + [1] * 80)  # the majority class (neg) scores 0.600
    rows = _rows("prompt_template", "prompt", [_predictions(golds, 150, rng)], fit=0.0)  # 0.75
    rows += _rows("full", "fine tuning", [_predictions(golds, 110, rng) for _ in range(2)],
                  fit=5.0, ms=1.0)  # 0.55: below the majority
    rows[0]["zero_shot_reference"] = True
    s = _summary(rows, golds)
    assert s["baselines"]["majority"] == {"label": "neg", "score": pytest.approx(0.6), "n": 200}
    assert s["baselines"]["zero_shot"] == {"method": "prompt_template", "score": 0.75}
    by = {m["method"]: m for m in s["methods"]}
    assert by["full"]["below_majority"] and not by["prompt_template"]["below_majority"]
    md = markdown(s)
    assert "majority class (always 'neg'): accuracy 0.600; below it: full" in md
    assert "zero-shot (prompt_template): accuracy 0.750" in md
    assert "0.550 (below majority)" in md
    # if the constraints leave only it, the recommendation says so in words
    rec = recommend(s["methods"], Constraints(max_latency_ms=5))
    assert rec["method"] == "full"
    assert any("below the majority-class baseline (0.550 < 0.600)" in f for f in rec["flags"])


def test_macro_f1_majority_and_ties_use_predictions_and_golds():
    rng = np.random.default_rng(7)
    golds = np.array([0, 1, 2] * 100)
    rows = _rows("a", "prompt", [_predictions(golds, 250, rng)])
    rows += _rows("b", "prompt", [_predictions(golds, 249, rng)])
    for r in rows:
        r["metric"] = "macro_f1"
    record = _record(golds, labels=("x", "y", "z"), majority="x")
    s = summarize(_with_scores(rows, golds), PLAN, records=record)
    assert s["baselines"]["majority"]["score"] == pytest.approx((2 * 100 / 400) / 3)
    cmp = s["recommendation"]["vs_best"]
    assert list(cmp) == ["b"] and cmp["b"]["tied"] and cmp["b"]["paired"]


def test_methods_with_the_same_answers_are_said_to_score_the_same():
    rng = np.random.default_rng(8)
    golds = np.array([0, 1] * 30)
    same = _predictions(golds, 45, rng)
    rows = _rows("few_shot", "prompt", [same, same], fit=0.0)
    rows += _rows("lora", "fine tuning", [same, same], fit=100.0)
    rec = _summary(rows, golds)["recommendation"]
    assert rec["method"] == "few_shot"  # tied, and cheaper
    assert "few_shot and lora score the same on every resample of the 60 test rows" in \
        " ".join(rec["flags"])


def test_a_balanced_training_file_takes_the_test_rows_majority():
    from tailorlm.data.task import Example, Task
    from tailorlm.engine.predictions import test_rows

    train = Task("t", "classification", [Example(f"x{i}", lab, lab) for i, lab in
                                         enumerate(["a", "b"] * 4)])
    test = train.with_examples([Example(f"y{i}", lab, lab) for i, lab in
                                enumerate(["b", "b", "a"])])
    assert test_rows(test, train)["majority_label"] == "b"
    skewed = train.with_examples(train.examples + [Example("z", "a", "a")])
    assert test_rows(test, skewed)["majority_label"] == "a"  # the training data decides
