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


def test_two_seeds_come_before_k_and_test_rows_when_the_whole_plan_does_not_fit():
    """Too slow for the whole plan, fast enough for two seeds of every method on fewer rows: the
    largest k at which they fit is kept (test rows cut, not below MIN_PART_TEST), not one seed
    at a larger k, and the estimate of those seeds fits the budget."""
    from tailorlm.compare.budget import MIN_PART_TEST, SAFETY, _totals, protocol_info

    s = sized(30, 0.5)
    assert s["seeds_fit"] == 2 and MIN_PART_TEST <= s["max_test"] < 300
    assert s["sensitivity"] == 20 and len(s["curve"]) > 1
    assert any("2 seeds of every method at k fit" in n for n in s["notes"])
    train = task(300)
    plan = default_plan(["task=x", "budget_minutes=30", f"methods={METHODS}"])
    probe = Probe(s_query=0.5, tok_s=600.0, row_tokens=30.0, n_labels=2)
    infos = {m: {**method_costs(m), **protocol_info(s)} for m in METHODS}
    fixed, per_row = _totals(plan, probe, infos, train, s["k"], [s["k"]], 20, seeds=2)
    assert fixed + per_row * s["max_test"] <= 30 * 60 * SAFETY
    fixed, per_row = _totals(plan, probe, infos, train, 2 * s["k"], [2 * s["k"]], 20, seeds=2)
    assert fixed + per_row * MIN_PART_TEST > 30 * 60 * SAFETY  # twice k would not hold them


def test_when_nothing_fits_one_run_per_method_on_fewer_rows():
    s = sized(1, 0.5)
    assert s["max_test"] == 100 and s["k"] == 1
    # the cheapest fit, since nothing fits anyway: at k=1 (2 rows) nothing is held out, so
    # 'lean cap' costs what 'no refit' does, and the richer is kept
    assert s["protocol"] == "lean cap"
    assert any("too few rows to hold any out" in g for g in s["gives_up"])
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
    assert forced["lr_search"] and forced["lr_factors"] == [0.3, 1.0, 3.0]
    assert (forced["k"], forced["seeds_fit"]) <= (tight["k"], tight["seeds_fit"])  # never more


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
    # the hybrid's LoRA is the plan's lora fit (methods/fit_memo.py): the same config
    assert hybrid.weight == get_method("lora").config.from_dict(runs["lora"].config)


def test_latency_is_timed_on_each_methods_first_run_only():
    from tailorlm.compare.bakeoff import plan_runs

    plan = default_plan(["task=x", "methods=[prompt_template, lora]", "seeds=[0, 1]"])
    sizing = {"k": 4, "curve": [1, 4], "max_test": 100, "sensitivity": 20}
    runs = plan_runs(plan, task(300), sizing, None)
    assert len(runs) == 6
    assert [(r.method, r.seed, r.k) for r in runs if r.latency] == [("prompt_template", 0, 4),
                                                                    ("lora", 0, 4)]
    assert all(r.latency == r.required == bool(r.sensitivity) for r in runs)


def test_a_tight_budget_caps_epochs_at_the_expected_length_before_cutting_k():
    # a machine where the plain cap would cut k below 4 but the lean one keeps it (the exact
    # point moves with the methods' train_cost: full's is 7 since checkpoints go by the clock)
    s = sized(25, 0.05, tok_s=40.0)
    full = sized(25, 0.05, tok_s=40.0, **{"train.epochs": 16})  # a plan's own cap is kept
    assert s["lean_epochs"] and not full["lean_epochs"] and s["k"] >= full["k"]
    assert any("epochs capped" in n for n in s["notes"])
    assert epochs_for(32, lean=True) == 4 < expected_epochs(32) == 8 < epochs_for(32) == 16


def test_the_fit_protocol_steps_down_only_as_far_as_the_budget_needs():
    """The richest rung that buys as much as the leanest: the full protocol with room to
    spare, then one lr, the lean cap, no refit as the machine slows; each says what it gives
    up, and plan.yaml gets it (gives_up)."""
    rungs = [sized(30, q, tok)["protocol"] for q, tok in
             ((0.001, 3000.0), (0.004, 1000.0), (0.02, 600.0), (0.5, 600.0))]
    assert rungs == ["full", "one lr", "lean cap", "no refit"]
    s = sized(30, 0.5)
    assert (s["lr_search"], s["lean_epochs"], s["refit"]) == (False, True, False)
    assert any("no refit: the kept weights are the trial's" in g for g in s["gives_up"])
    assert any("one learning rate per method" in g for g in s["gives_up"])
    assert sized(30, 0.001, 3000.0)["gives_up"] == []


def test_a_pinned_protocol_holds_on_every_rung():
    from tailorlm.compare.budget import protocols

    auto = {"lr_search": "auto", "epochs": "auto", "refit": "auto"}
    assert [r.name for r in protocols(auto)] == ["full", "one lr", "lean cap", "no refit"]
    assert [(r.trials, r.lean, r.refit) for r in protocols({**auto, "refit": True})] == [
        (3, False, True), (1, False, True), (1, True, True)]
    assert [(r.trials, r.lean, r.refit) for r in protocols({**auto, "epochs": 8})] == [
        (3, False, True), (1, False, True), (1, False, False)]
    assert len(protocols({"lr_search": False, "epochs": 8, "refit": True})) == 1
    pinned = sized(30, 0.5, **{"train.refit": "true"})
    assert pinned["refit"] and pinned["protocol"] == "lean cap"


def test_the_demo_budget_buys_two_seeds_of_every_method_by_dropping_the_refit():
    """`make demo` (support_routing: 10 labels, 140 test rows; the default plan, 9 minutes) on
    the probe measured on this machine at load ~2 (0.063 s/query, 560 tokens/s): with the refit
    every method fits once; without it, two seeds of all six at k=4 on all 140 rows.
    instruction_search does not fit beside them and is left out."""
    from tailorlm.compare.budget import SAFETY, _totals, protocol_info
    from tailorlm.data.load import load_builtin_task

    train, test = load_builtin_task("support_routing")
    probe = Probe(s_query=0.063, tok_s=560.0, row_tokens=32.2, n_labels=10)

    def demo(*extra):
        plan = default_plan(["task=support_routing", "budget_minutes=9", *extra])
        return plan, size_plan(plan, train, test, probe,
                               {m.method: method_costs(m.method) for m in plan.methods})

    plan, s = demo()
    assert (s["k"], s["seeds_fit"], s["max_test"]) == (4, 2, 140)
    assert s["protocol"] == "no refit" and not s["refit"]
    assert s["left_out"] == ["instruction_search"]  # it would cost the seeds' rows here
    infos = {m.method: {**method_costs(m.method), **protocol_info(s)} for m in plan.methods
             if m.method not in s["left_out"]}
    fixed, per_row = _totals(plan, probe, infos, train, 4, [4], s["sensitivity"], seeds=2)
    assert fixed + per_row * 140 <= 9 * 60 * SAFETY
    _, with_refit = demo("train.refit=true")  # the refit costs k=4 its second seed
    assert with_refit["refit"] and not (with_refit["k"] >= 4 and with_refit["seeds_fit"] >= 2)


def test_a_fit_without_refit_costs_its_trials_only():
    p = Probe(s_query=0.0, tok_s=1000.0, row_tokens=10.0, n_labels=2)
    trial = 24 * min(16, 10 + 2 * 1.6) * 10 / 1000
    assert estimate_fit(p, (1.0,), 32, 16, refit=False) == pytest.approx(trial)
    assert estimate_fit(p, (1.0,), 32, 16, trials=3, refit=False) == pytest.approx(3 * trial)


def test_plan_runs_drop_the_refit_of_learning_methods_only():
    from tailorlm.compare.bakeoff import plan_runs

    plan = default_plan(["task=x", "methods=[prompt_template, lora, lora+soft_prompt]"])
    sizing = {"k": 16, "curve": [16], "max_test": 100, "sensitivity": 0, "lr_search": False,
              "lr_factors": [1.0], "lean_epochs": True, "refit": False}
    runs = {r.method: r for r in plan_runs(plan, task(300), sizing, None) if r.seed == 0}
    assert runs["lora"].config["refit"] is False and "refit" not in runs["prompt_template"].config
    hybrid = get_method("lora+soft_prompt").config.from_dict(runs["lora+soft_prompt"].config)
    assert hybrid.weight.refit is False and hybrid.input.refit is False


def test_instruction_search_joins_the_default_plan_where_it_costs_nothing_else():
    """The default plan's extra (plan.IF_IT_FITS) is sized on top of the rest: kept where the
    sizes stay the same, left out (and said) where it would cost seeds, k, the curve or rows;
    a plan that lists it runs it whatever the budget."""
    train, test = task(300), task(400)
    probe = Probe(s_query=0.01, tok_s=600.0, row_tokens=30.0, n_labels=2)

    def size(minutes, *extra):
        plan = default_plan(["task=x", f"budget_minutes={minutes}", *extra])
        return size_plan(plan, train, test, probe,
                         {m.method: method_costs(m.method) for m in plan.methods})

    roomy, tight = size(30), size(2)
    assert roomy["left_out"] == [] and roomy["whole"]
    assert tight["left_out"] == ["instruction_search"]
    assert any("instruction_search left out" in g for g in tight["gives_up"])
    listed = size(2, "methods=[prompt_template, lora, instruction_search]")
    assert listed["left_out"] == []


def test_what_the_sizing_left_out_is_not_run_and_a_rerun_keeps_it_out(tmp_path):
    import yaml

    from tailorlm.compare.bakeoff import PLAN_FILE, _recorded_sizing, plan_runs, without

    plan = default_plan(["task=x"])
    sizing = {"k": 4, "curve": [4], "max_test": 100, "sensitivity": 0, "lr_search": False,
              "lr_factors": [1.0], "lean_epochs": True, "refit": False,
              "left_out": ["instruction_search"], "gives_up": ["instruction_search left out"]}
    methods = {r.method for r in plan_runs(without(plan, sizing["left_out"]), task(30), sizing,
                                           None)}
    assert "instruction_search" not in methods and "lora" in methods
    (tmp_path / PLAN_FILE).write_text(yaml.safe_dump({**plan.to_dict(), "resolved": sizing}))
    (tmp_path / "results.jsonl").write_text('{"run_key": "a", "method": "lora"}\n')
    again = _recorded_sizing(plan, tmp_path)
    assert again["left_out"] == ["instruction_search"] and again["refit"] is False
    assert again["gives_up"] == sizing["gives_up"]


def labelled(counts: dict[str, int], kind: str = "classification") -> Task:
    rows = [Example(input=f"{label} text {i}", target=label, label=label if kind ==
                    "classification" else None)
            for label, n in counts.items() for i in range(n)]
    return Task(name="t", kind=kind, examples=rows)


@pytest.mark.parametrize("counts,k", [
    ({f"c{i}": 5 for i in range(10)}, 1),  # k=1 per class: no label can spare a row
    ({f"c{i}": 5 for i in range(10)}, 2),
    ({"a": 3, "b": 3}, 2),  # 4 rows: under 8
    ({"a": 3, "b": 3, "c": 3, "d": 3}, 2),  # 8 rows
    ({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 9}, 2),  # one label spares
])
def test_the_budget_knows_when_a_fit_can_hold_rows_out(counts, k):
    """budget.holds_out (from label counts, no sample drawn) says what trainable.held_out does
    with the k-per-class sample the runner fits on."""
    from tailorlm.compare.budget import holds_out
    from tailorlm.data.sample import k_per_class
    from tailorlm.methods.trainable import held_out

    train = labelled(counts)
    assert holds_out(train, k) == (held_out(k_per_class(train, k, 0), None, 0)[1] is not None)
    gen = labelled({"x": 20}, kind="generation")
    assert holds_out(gen, 8) and not holds_out(gen, 7)


def test_a_fit_that_holds_nothing_out_is_one_run_to_the_cap():
    """k=1 per class: every row trains at the default lr to the cap; the lr trials, the
    validation passes and the refit the rung would plan are not run, and not estimated."""
    p = Probe(s_query=0.5, tok_s=1000.0, row_tokens=10.0, n_labels=10)
    one_run = 10 * 30 * 10 * 4.5 / 1000
    assert estimate_fit(p, (4.5,), 10, 30, trials=3, judged=False) == pytest.approx(one_run)
    assert estimate_fit(p, (4.5,), 10, 30, trials=3) > 3 * one_run / 2  # what it planned before


def test_at_k1_the_report_says_what_the_fit_does_not_what_the_rung_gives_up():
    """A budget that buys only k=1 per class: plan.yaml and the report say every row trains to
    the cap (the 'no refit: trained on 3/4 of the rows' line would be wrong there)."""
    labels = {f"c{i}": 40 for i in range(10)}
    train, test = labelled(labels), labelled(labels)
    plan = default_plan(["task=x", "budget_minutes=2", f"methods={METHODS}", "train.k=1",
                         "train.curve=[1]"])
    probe = Probe(s_query=0.05, tok_s=600.0, row_tokens=30.0, n_labels=10)
    s = size_plan(plan, train, test, probe, {m: method_costs(m) for m in METHODS})
    assert s["k"] == 1
    assert any("too few rows to hold any out" in g for g in s["gives_up"])
    assert not any("3/4 of the training rows" in g or "one learning rate per method" in g
                   for g in s["gives_up"])
