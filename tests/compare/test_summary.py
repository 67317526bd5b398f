"""From hand-made result rows to the summary: aggregation, gaps, costs, break-even, curves."""

import pytest

from tailorlm.compare.recommend import Constraints
from tailorlm.compare.summary import summarize


def row(method, family, seed, k, score, fit=1.0, ms=10.0, train_score=None, sensitivity=None,
        where="local"):
    return {"method": method, "family": family, "side": "input", "where": where, "task": "t",
            "model": "m", "metric": "accuracy", "score": score, "score_ci": [score - .05,
                                                                               score + .05],
            "n_eval": 100, "seed": seed, "k": k, "n_train": 2 * k, "fit_seconds": fit,
            "eval_seconds": ms / 10, "latency_ms_per_query": ms, "prompt_tokens_per_query": 30,
            "trainable_params": 0 if family == "prompt" else 1000, "total_params": 10**6,
            "artifact_bytes": 100, "peak_rss_mb": 500.0, "load_seconds": 0.1,
            "train_score": train_score, "sensitivity": sensitivity}


PLAN = {"resolved": {"k": 16, "n_train_available": 3000},
        "costs": {"cpu_hour_usd": 3.6, "queries_per_day": 1000}}  # $0.001 per second


@pytest.fixture
def summary():
    rows = [row("prompt_template", "prompt", s, 16, 0.70, fit=0.0, ms=10.0,
                sensitivity={"std": 0.1, "range": 0.3, "n_variants": 7, "scores": {}}
                if s == 0 else None) for s in range(3)]
    rows += [row("few_shot", "prompt", s, 16, 0.80, fit=0.0, ms=50.0, train_score=0.82)
             for s in range(3)]
    rows += [row("lora", "fine tuning", s, 16, sc, fit=100.0, ms=10.0, train_score=0.99)
             for s, sc in enumerate([0.84, 0.86, 0.85])]
    # the data-efficiency curve: few_shot flat, lora climbing past it between k=4 and k=16
    rows += [row("few_shot", "prompt", 0, 4, 0.78), row("lora", "fine tuning", 0, 4, 0.60),
             row("few_shot", "prompt", 0, 64, 0.81), row("lora", "fine tuning", 0, 64, 0.90)]
    return summarize(rows, PLAN)


def test_scores_are_mean_and_std_over_seeds(summary):
    m = {x["method"]: x for x in summary["methods"]}
    assert list(m) == ["prompt_template", "few_shot", "lora"]
    assert m["lora"]["score_mean"] == pytest.approx(0.85)
    assert m["lora"]["score_std"] == pytest.approx(0.01)  # sample std of .84 .85 .86
    assert m["lora"]["n_seeds"] == 3 and len(m["lora"]["score_cis"]) == 3
    assert summary["seeds"] == [0, 1, 2] and summary["k"] == 16


def test_overfitting_gap_and_risk(summary):
    m = {x["method"]: x for x in summary["methods"]}
    assert m["lora"]["overfit_gap"] == pytest.approx(0.14)
    assert m["lora"]["overfit_risk"] == "medium"  # a gap over 0.05, not over 0.15
    assert m["few_shot"]["overfit_gap"] == pytest.approx(0.02)
    assert m["few_shot"]["overfit_risk"] == "low"
    assert m["prompt_template"]["overfit_gap"] is None


def test_costs_and_break_even_against_few_shot(summary):
    m = {x["method"]: x for x in summary["methods"]}
    lora, fs = m["lora"]["cost"], m["few_shot"]["cost"]
    assert lora["fit_usd"] == pytest.approx(0.1)  # 100 s at $0.001/s
    assert fs["per_query_usd"] == pytest.approx(0.05 * 0.001)
    assert lora["monthly_usd"] == pytest.approx(30 * 1000 * 0.01 * 0.001)
    # lora costs $0.1 more up front and $0.00004 less per query: even after 2,500 queries
    assert m["lora"]["break_even_queries"] == pytest.approx(2500)
    assert m["prompt_template"]["break_even_queries"] == 0.0  # cheaper both ways
    assert m["few_shot"]["break_even_queries"] is None
    assert m["lora"]["gain_over_zero_shot"] == pytest.approx(0.15)


def test_curves_and_where_they_cross(summary):
    assert [p["k"] for p in summary["curves"]["lora"]] == [4, 16, 64]
    assert summary["curves"]["lora"][1]["score"] == pytest.approx(0.85)  # mean over seeds at k
    assert "prompt_template" not in summary["curves"]  # one point is not a curve
    (cross,) = summary["crossings"]
    assert (cross["a"], cross["b"]) == ("few_shot", "lora") and 4 < cross["k"] < 16


def test_pareto_front_and_tables(summary):
    # prompt_template is cheapest and lora best; few_shot's month (30k queries at 50 ms, $1.50)
    # costs more than lora's fit and month ($0.40), for a lower score
    assert summary["pareto"] == ["prompt_template", "lora"]
    kd = summary["tables"]["key_differences"]
    assert kd["columns"] == ["aspect", "prompt_template", "few_shot", "lora"]
    assert all(len(r) == 4 for r in kd["rows"])
    cp = summary["tables"]["cost_performance"]
    assert [r[0] for r in cp["rows"]] == ["prompt_template", "few_shot", "lora"]
    assert "+15.0 points" in cp["rows"][2][4]
    assert "0.1 KB" in cp["rows"][2][6] or "100 B" in cp["rows"][2][6]


def test_the_reports_say_what_peak_memory_counts(summary):
    from tailorlm.compare.html import render_html
    from tailorlm.compare.report import markdown

    note = summary["tables"]["cost_performance"]["note"]
    assert "minus what it held when the run began" in note
    assert note in markdown(summary)
    assert "minus what it held when the run began" in render_html(summary)


def test_recommendation_defaults_to_the_plans_query_volume(summary):
    assert summary["recommendation"]["method"] == "lora"
    assert summary["queries_per_day"] == 1000


def test_constraints_passed_to_summarize():
    rows = [row("few_shot", "prompt", 0, 16, 0.8), row("lora", "fine tuning", 0, 16, 0.9,
                                                        fit=600.0)]
    s = summarize(rows, PLAN, Constraints(max_train_minutes=5, queries_per_day=5))
    assert s["recommendation"]["method"] == "few_shot" and s["queries_per_day"] == 5
    assert "lora" in s["recommendation"]["excluded"]
