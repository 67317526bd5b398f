"""Sizing the default plan to its budget, on a fake probe (no model)."""

import pytest

from tailorlm.compare.budget import (Probe, epochs_for, estimate_fit, expected_epochs,
                                     method_costs, size_plan)
from tailorlm.compare.plan import default_plan
from tailorlm.data.task import Example, Task
from tailorlm.methods import get_method

METHODS = ["prompt_template", "few_shot", "lora", "full"]


def task(n_per_class: int) -> Task:
    rows = [Example(input=f"{label} text {i}", target=label, label=label)
            for label in ("negative", "positive") for i in range(n_per_class)]
    return Task(name="t", kind="classification", examples=rows)


def sized(budget_minutes, s_query, tok_s=600.0, **extra):
    train, test = task(300), task(400)
    plan = default_plan(["task=x", f"budget_minutes={budget_minutes}",
                         f"methods={METHODS}"] + [f"{k}={v}" for k, v in extra.items()])
    probe = Probe(s_query=s_query, tok_s=tok_s, row_tokens=30.0, n_labels=2)
    return size_plan(plan, train, test, probe, {m: method_costs(m) for m in METHODS})


def test_a_fast_machine_gets_the_preferred_sizes():
    s = sized(30, 0.001, tok_s=3000.0)
    assert (s["k"], s["curve"], s["max_test"]) == (16, [4, 16, 64], 800)
    assert s["sensitivity"] == 200 and s["notes"] == []
    assert s["lr_search"] and s["lr_factors"] == [0.3, 1.0, 3.0]  # room for three lrs


def test_less_time_drops_the_curve_top_then_k_then_the_curve():
    fast, slower, slowest = sized(30, 0.02), sized(30, 0.04), sized(30, 0.08)
    assert fast["curve"][-1] <= 64 and fast["max_test"] >= 300
    sizes = [(s["k"], len(s["curve"])) for s in (fast, slower, slowest)]
    assert sizes == sorted(sizes, reverse=True)  # never more work on a slower machine
    for s in (fast, slower, slowest):
        assert s["estimate_seconds"] <= 30 * 60 or s["notes"]


def test_seeds_come_before_test_rows_when_the_whole_plan_does_not_fit():
    """Too slow for the whole plan at MIN_TEST rows, fast enough for every seed on fewer: the
    seeds are kept (test rows cut, not below MIN_PART_TEST) rather than one seed on many rows."""
    s = sized(30, 0.5)
    assert 50 <= s["max_test"] < 300 and s["sensitivity"] == 20 and len(s["curve"]) > 1
    assert any("every seed at k fits" in n for n in s["notes"])
    # what the runner is told to expect for the seeds at k fits the budget
    train, test = task(300), task(400)
    plan = default_plan(["task=x", "budget_minutes=30", f"methods={METHODS}"])
    probe = Probe(s_query=0.5, tok_s=600.0, row_tokens=30.0, n_labels=2)
    from tailorlm.compare.budget import SAFETY, _totals
    infos = {m: {**method_costs(m), "lean": s["lean_epochs"]} for m in METHODS}
    fixed, per_row = _totals(plan, probe, infos, train,
                             s["k"], [s["k"]], s["sensitivity"])
    assert fixed + per_row * s["max_test"] <= 30 * 60 * SAFETY


def test_when_nothing_fits_one_run_per_method_on_fewer_rows():
    s = sized(1, 0.5)
    assert s["max_test"] == 50 and s["k"] == 1
    assert any("they run anyway" in n for n in s["notes"])


def test_explicit_values_are_kept():
    s = sized(30, 0.5, **{"train.k": 8, "train.curve": "[8]", "eval.max_test": 120})
    assert (s["k"], s["curve"], s["max_test"]) == (8, [8], 120)


def test_early_stopping_expects_about_240_rows_seen_under_a_cap_twice_that():
    assert [expected_epochs(n) for n in (6, 12, 24, 96, 1000)] == [20, 20, 10, 2, 2]
    assert [epochs_for(n) for n in (6, 12, 24, 32, 96, 1000)] == [30, 30, 20, 16, 10, 10]


def test_the_lr_choice_is_planned_only_where_it_costs_nothing_else():
    """Three lrs triple the trials: kept where the plan keeps its k and curve, else dropped with
    a note; a plan can ask for it or refuse it outright."""
    cheap, tight = sized(30, 0.001, tok_s=3000.0), sized(30, 0.5)
    assert cheap["lr_search"] and not tight["lr_search"]
    assert any("one learning rate per method" in n for n in tight["notes"])
    assert tight["lr_factors"] == [1.0]
    assert sized(30, 0.001, 3000.0, **{"train.lr_search": "false"})["lr_search"] is False
    forced = sized(30, 0.5, **{"train.lr_search": "true"})
    assert forced["lr_search"] and forced["estimate_seconds"] > tight["estimate_seconds"]


def test_a_fit_estimate_counts_trials_and_the_refit():
    """One lr: a trial on 3/4 of the rows to the expected epochs plus the patience, then a refit
    on every row for the expected epochs; three lrs: three trials and one refit."""
    p = Probe(s_query=0.0, tok_s=1000.0, row_tokens=10.0, n_labels=2)
    n = 32  # 24 trained in a trial; expected 10 epochs of 24 rows; cap 16 -> every 1.6 epochs
    one, three = estimate_fit(p, (1.0,), n, 16), estimate_fit(p, (1.0,), n, 16, trials=3)
    trial = 24 * min(16, 10 + 2 * 1.6) * 10 / 1000
    refit = 32 * 10 * 10 / 1000
    assert one == pytest.approx(trial + refit)
    assert three == pytest.approx(3 * trial + refit)


def test_plan_runs_carry_the_cap_and_the_lr_choice():
    from tailorlm.compare.bakeoff import plan_runs

    train = task(300)
    plan = default_plan(["task=x", "methods=[prompt_template, lora, lora+soft_prompt]"])
    sizing = {"k": 16, "curve": [16], "max_test": 100, "sensitivity": 0, "lr_search": True,
              "lr_factors": [0.3, 1.0, 3.0]}
    runs = {r.method: r for r in plan_runs(plan, train, sizing, None) if r.seed == 0}
    assert runs["lora"].config == {"epochs": 16, "lr_factors": [0.3, 1.0, 3.0]}
    assert "lr_factors" not in runs["prompt_template"].config
    hybrid = get_method("lora+soft_prompt").config.from_dict(runs["lora+soft_prompt"].config)
    assert hybrid.weight.lr_factors == hybrid.input.lr_factors == [0.3, 1.0, 3.0]


def test_a_tight_budget_caps_epochs_at_the_expected_length_before_cutting_k():
    # a machine where the plain cap would cut k below 4 but the lean one keeps it (the exact
    # point moves with the methods' train_cost: full's is 7 since checkpoints go by the clock)
    s = sized(25, 0.05, tok_s=40.0)
    full = sized(25, 0.05, tok_s=40.0, **{"train.epochs": 16})  # a plan's own cap is kept
    assert s["lean_epochs"] and not full["lean_epochs"] and s["k"] >= full["k"]
    assert any("epochs capped" in n for n in s["notes"])
    assert epochs_for(32, lean=True) == 4 < expected_epochs(32) == 8 < epochs_for(32) == 16
