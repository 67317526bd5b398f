"""Sizing the default plan to its budget, on a fake probe (no model)."""

from tailorlm.compare.budget import Probe, epochs_for, method_costs, size_plan
from tailorlm.compare.plan import default_plan
from tailorlm.data.task import Example, Task

METHODS = ["prompt_template", "few_shot", "lora", "full"]


def task(n_per_class: int) -> Task:
    rows = [Example(input=f"{label} text {i}", target=label, label=label)
            for label in ("negative", "positive") for i in range(n_per_class)]
    return Task(name="t", kind="classification", examples=rows)


def sized(budget_minutes, s_query, **extra):
    train, test = task(300), task(400)
    plan = default_plan(["task=x", f"budget_minutes={budget_minutes}",
                         f"methods={METHODS}"] + [f"{k}={v}" for k, v in extra.items()])
    probe = Probe(s_query=s_query, tok_s=600.0, row_tokens=30.0, n_labels=2)
    return size_plan(plan, train, test, probe, {m: method_costs(m) for m in METHODS})


def test_a_fast_machine_gets_the_preferred_sizes():
    s = sized(30, 0.001)
    assert (s["k"], s["curve"], s["max_test"]) == (16, [4, 16, 64], 800)
    assert s["sensitivity"] == 200 and s["notes"] == []


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
    fixed, per_row = _totals(plan, probe, {m: method_costs(m) for m in METHODS}, train,
                             s["k"], [s["k"]], s["sensitivity"])
    assert fixed + per_row * s["max_test"] <= 30 * 60 * SAFETY


def test_when_nothing_fits_one_run_per_method_on_fewer_rows():
    s = sized(1, 0.5)
    assert s["max_test"] == 50 and s["k"] == 1
    assert any("they run anyway" in n for n in s["notes"])


def test_explicit_values_are_kept():
    s = sized(30, 0.5, **{"train.k": 8, "train.curve": "[8]", "eval.max_test": 120})
    assert (s["k"], s["curve"], s["max_test"]) == (8, [8], 120)


def test_epochs_see_about_240_rows():
    assert [epochs_for(n) for n in (6, 12, 24, 96, 1000)] == [20, 20, 10, 2, 2]
