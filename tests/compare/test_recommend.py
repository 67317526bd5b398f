"""The recommendation rules on hand-made results: each constraint changes the answer where it
should, and only there."""

import pytest

from compare.report_fixture import sample_summary
from tailorlm.compare.recommend import Constraints, ranking, recommend


def methods():
    return sample_summary()["methods"]


def pick(constraints: Constraints, ms=None) -> dict:
    return recommend(ms if ms is not None else methods(), constraints)


def test_without_constraints_the_best_score_wins():
    rec = pick(Constraints(queries_per_day=10_000))
    # no per-row outcomes in the fixture: lora's 0.85 is inside full's bootstrap interval
    # (0.843 to 0.897), so they tie, and full's faster queries make its month cheaper
    assert rec["method"] == "full" and rec["best"] == "full"
    assert rec["runner_up"] == "lora" and rec["excluded"] == {}
    assert rec["vs_best"]["lora"]["tied"] and not rec["vs_best"]["prefix"]["tied"]
    assert any(f.startswith("full is not separable from lora") for f in rec["flags"])
    assert any("the best" in r for r in rec["reasons"])


@pytest.mark.parametrize("constraints, winner, runner_up, excluded", [
    (Constraints(max_train_minutes=2), "lora", "few_shot", {"full"}),
    (Constraints(api_only=True), "few_shot", "prompt_template",
     {"soft_prompt", "prefix", "lora", "full"}),
    (Constraints(max_latency_ms=40), "full", "prompt_template",
     {"few_shot", "soft_prompt", "lora"}),
    (Constraints(max_memory_mb=2000), "few_shot", "prompt_template", {"prefix", "lora", "full"}),
    (Constraints(api_only=True, max_latency_ms=50), "prompt_template", None,
     {"few_shot", "soft_prompt", "prefix", "lora", "full"}),
])
def test_each_constraint_changes_the_answer(constraints, winner, runner_up, excluded):
    rec = pick(constraints)
    assert rec["method"] == winner and rec["runner_up"] == runner_up
    assert set(rec["excluded"]) == excluded


def test_reasons_name_the_limit():
    rec = pick(Constraints(max_train_minutes=2))
    assert rec["excluded"]["full"] == "fit took 5.2 min > --max-train-minutes 2"
    rec = pick(Constraints(api_only=True))
    assert "--api-only" in rec["excluded"]["lora"]


def _tied_pair(qpd):
    """A few-shot prompt (no fit, long prompts) and LoRA (a fit, short prompts), equally good."""
    base = {"score_std": 0.01, "n_seeds": 3, "where": "local", "sensitivity": None,
            "overfit_risk": "low", "overfit_gap": 0.0, "gain_over_zero_shot": 0.02}
    fs = {**base, "method": "few_shot", "family": "prompt", "score_mean": 0.850,
          "fit_seconds": 0.0, "latency_ms_per_query": 100.0, "trainable_params": 0}
    lo = {**base, "method": "lora", "family": "fine tuning", "score_mean": 0.852,
          "fit_seconds": 600.0, "latency_ms_per_query": 20.0, "trainable_params": 10**6}
    per_second = 0.10 / 3600
    for m in (fs, lo):
        per_query = m["latency_ms_per_query"] / 1000 * per_second
        m["cost"] = {"fit_usd": m["fit_seconds"] * per_second, "per_query_usd": per_query,
                     "monthly_usd": 30 * qpd * per_query}
    return [fs, lo]


def test_query_volume_decides_between_equally_good_methods():
    # 10 queries a day: LoRA's one-off fit is never paid back; 1M a day: its short prompts are
    low = recommend(_tied_pair(10), Constraints(queries_per_day=10))
    high = recommend(_tied_pair(1_000_000), Constraints(queries_per_day=1_000_000))
    assert (low["method"], low["runner_up"]) == ("few_shot", "lora")
    assert (high["method"], high["runner_up"]) == ("lora", "few_shot")
    assert any("tied" in r for r in low["reasons"])  # no per-row outcomes: the interval rule
    assert any("the best" in r for r in low["runner_up_reasons"])


def test_sensitive_data_rules_out_remote_endpoints():
    ms = _tied_pair(10)
    remote = {**ms[0], "method": "few_shot@api", "where": "remote", "score_mean": 0.95}
    assert recommend(ms + [remote], Constraints())["method"] == "few_shot@api"
    rec = recommend(ms + [remote], Constraints(sensitive_data=True))
    assert rec["method"] == "few_shot" and "few_shot@api" in rec["excluded"]


def test_monthly_budget():
    ms = _tied_pair(1_000_000)
    rec = recommend(ms, Constraints(queries_per_day=1_000_000, max_monthly_usd=50))
    # few_shot: 30 * 1e6 * 100 ms at $0.10/h = $83; lora: $17 + its fit
    assert rec["method"] == "lora" and "few_shot" in rec["excluded"]


def test_nothing_meets_the_constraints():
    rec = pick(Constraints(max_latency_ms=1))
    assert rec["method"] is None and rec["runner_up"] is None
    assert rec["reasons"][0].startswith("no method meets the constraints")


def test_ties_prefer_lower_sensitivity_then_fewer_parameters():
    a, b = _tied_pair(10)
    b = {**b, "cost": dict(a["cost"]), "score_mean": a["score_mean"]}
    a["sensitivity"], b["sensitivity"] = {"std": 0.05}, {"std": 0.01}
    assert [m["method"] for m in ranking([a, b])] == ["lora", "few_shot"]
    a["sensitivity"] = b["sensitivity"] = None
    assert [m["method"] for m in ranking([a, b])] == ["few_shot", "lora"]
