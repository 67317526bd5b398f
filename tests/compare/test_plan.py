from pathlib import Path

import pytest

from tailorlm.compare.plan import DEFAULT_METHODS, IF_IT_FITS, default_plan, load_plan, \
    method_config
from tailorlm.errors import TailorError
from tailorlm.methods import get_method

EXAMPLES = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_there_are_example_plans():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_plan_loads(path):
    plan = load_plan(path)
    assert plan.methods and plan.seeds
    for entry in plan.methods:  # every method's options build its config
        get_method(entry.method).config.from_dict(method_config(plan, entry))


def test_default_plan_covers_every_family():
    plan = default_plan(["task=support_routing"])
    families = {get_method(m.method).family for m in plan.methods}
    assert families == {"prompt", "soft prompt", "fine tuning", "hybrid"}
    assert [m.method for m in plan.methods] == DEFAULT_METHODS + IF_IT_FITS
    assert plan.optional == IF_IT_FITS  # run where the budget holds them
    assert plan.seeds == [0, 1, 2] and plan.get("train.k") == "auto"


def test_dotted_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("task: support_routing\nseeds: 2\nmethods:\n  - few_shot: {n_demos: 2}\n"
                    "  - lora\n")
    plan = load_plan(path, ["train.k=64", "seeds=3", "methods.lora.r=16",
                            "methods.few_shot.n_demos=8", "eval.max_test=null",
                            "costs.cpu_hour_usd=0.5"])
    assert plan.get("train.k") == 64 and plan.seeds == [0, 1, 2]
    assert plan.get("eval.max_test") is None and plan.get("costs.cpu_hour_usd") == 0.5
    assert plan.get("costs.queries_per_day") == 10_000  # defaults kept beside the override
    configs = {m.method: m.config for m in plan.methods}
    assert configs == {"few_shot": {"n_demos": 8}, "lora": {"r": 16}}


def test_shared_training_options_reach_only_methods_that_have_them():
    plan = default_plan(["task=x", "train.epochs=2", "methods.lora.epochs=7"])
    entries = {m.method: m for m in plan.methods}
    assert "epochs" not in method_config(plan, entries["few_shot"])
    assert method_config(plan, entries["soft_prompt"])["epochs"] == 2
    assert method_config(plan, entries["lora"])["epochs"] == 7  # the method's own wins
    assert method_config(plan, entries["lora+soft_prompt"])["epochs"] == 2


@pytest.mark.parametrize("text, overrides, message", [
    ("task: x\nsede: 3\n", [], "unknown plan key 'sede'"),
    ("task: x\ntrain: {kk: 3}\n", [], "unknown plan key 'train.kk'"),
    ("task: x\n", ["seeds=0"], "seeds is a count"),
    ("task: x\n", ["train.k=-1"], "train.k must be a whole number > 0"),
    ("task: x\n", ["train.curve=[4, x]"], "train.curve is auto or a list"),
    ("task: x\n", ["budget_minutes=0"], "budget_minutes must be a number > 0"),
    ("task: x\nmethods: [lora, lora]\n", [], "listed twice"),
    ("task: x\nmethods: [lora_x]\n", [], "unknown method 'lora_x'"),
    ("task: x\nmethods: [{lora: {rank: 8}}]\n", [], "methods.lora: unknown option(s) rank"),
    ("task: x\nmethods: [{lora: {r: 0}}]\n", [], "methods.lora: r must be a whole number"),
    ("task: x\ncosts: {gpu: 1}\n", [], "unknown cost 'gpu'"),
    ("task: x\n", ["seeds"], "write KEY=VALUE"),
    ("task: [x\n", [], "not valid YAML"),
    ("- a\n- b\n", [], "a plan is a mapping"),
])
def test_bad_plans_say_what_to_fix(tmp_path, text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TailorError, match=None) as err:
        load_plan(path, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_plan_file(tmp_path):
    with pytest.raises(TailorError, match="configs/examples"):
        load_plan(tmp_path / "nope.yaml")


def test_typed_values_and_text_overrides():
    plan = default_plan(["train.k=64", "methods.lora.r=16"],
                        values={"task": "support_routing", "methods": ["prompt_template", "lora"],
                                "seeds": [3], "train.curve": [4, 16], "eval.metric": "macro_f1"})
    assert plan.get("train.k") == 64 and plan.seeds == [3] and plan.get("train.curve") == [4, 16]
    assert {m.method: m.config for m in plan.methods} == {"prompt_template": {}, "lora": {"r": 16}}
    # a method option before the method list that adds its method still lands: options go last
    plan = default_plan(["methods.full.lr=1e-5", "methods=prompt_template,full"])
    assert {m.method: m.config for m in plan.methods}["full"] == {"lr": 1e-5}


def test_a_method_list_keeps_the_options_the_plan_gave(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("task: x\nmethods:\n  - few_shot: {n_demos: 2}\n  - lora: {r: 16}\n")
    plan = load_plan(path, values={"methods": ["lora", "prompt_template"]})
    assert {m.method: m.config for m in plan.methods} == {"lora": {"r": 16}, "prompt_template": {}}


@pytest.mark.parametrize("overrides, values", [
    (["methods.lora.r=16"], {"methods": ["prompt_template"]}),
    (["methods.lora.r=16", "methods=[prompt_template]"], {}),
])
def test_an_option_for_a_method_not_in_the_plan_is_an_error(overrides, values):
    with pytest.raises(TailorError) as err:
        default_plan(["task=x", *overrides], values)
    assert "lora is not among this plan's methods (prompt_template)" in str(err.value)
    assert "\n" not in str(err.value)


def test_variant_field_reaches_the_hybrids_and_only_them():
    plan = default_plan(values={"task": "x", "data.variant_field": "client"})
    entries = {m.method: m for m in plan.methods}
    assert method_config(plan, entries["lora+soft_prompt"]) == {"variant_field": "client"}
    for name in ("prompt_template", "few_shot", "soft_prompt", "lora", "full"):
        assert "variant_field" not in method_config(plan, entries[name])
    config = get_method("lora+soft_prompt").config.from_dict(
        method_config(plan, entries["lora+soft_prompt"]))
    assert config.variant_field == "client"


def test_variant_field_without_a_hybrid_is_refused():
    with pytest.raises(TailorError, match="has no hybrid"):
        default_plan(values={"task": "x", "data.variant_field": "client",
                             "methods": ["prompt_template", "lora"]})


def test_a_new_method_declares_what_the_plan_asks_of_it(monkeypatch):
    """compare/plan.py asks the spec (reads_variants, config.option_names), not its family:
    a method registered outside the built-in list takes the variant field and shared options."""
    import dataclasses

    from tailorlm.methods import METHODS

    @dataclasses.dataclass
    class RouterConfig(get_method("lora").config):
        variant_field: str | None = None

    spec = dataclasses.replace(get_method("lora"), name="router", config=RouterConfig,
                               family="fine tuning", reads_variants=True)
    monkeypatch.setitem(METHODS, "router", spec)
    plan = default_plan(values={"task": "x", "data.variant_field": "client", "train.epochs": 3,
                                "methods": ["prompt_template", "router"]})
    entry = next(m for m in plan.methods if m.method == "router")
    assert method_config(plan, entry) == {"variant_field": "client", "epochs": 3}


def test_numbers_read_as_people_write_them(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("task: x\nmethods:\n  - lora: {lr: 5e-4}\n")
    plan = load_plan(path, ["methods.lora.weight_decay=1e-2"])
    assert plan.methods[0].config == {"lr": 5e-4, "weight_decay": 0.01}


@pytest.mark.parametrize("values, message", [
    ({"eval.metric": "acc"}, "unknown eval.metric 'acc'; valid: accuracy, macro_f1 "
                             "(classification); exact_match, rouge_l, chrf (generation)"),
    ({"eval.metric": "accuracy", "data.kind": "generation"},
     "eval.metric 'accuracy' scores classification, and this is a generation task; valid: "
     "exact_match, rouge_l, chrf"),
    ({"eval.metric": "rouge_l", "data.kind": "classification"},
     "valid: accuracy, macro_f1"),
    ({"eval.tie_level": 1.5}, "eval.tie_level is a share of resamples between 0 and 1"),
])
def test_bad_metric_or_tie_level_fails_when_the_plan_is_checked(values, message):
    with pytest.raises(TailorError) as err:
        default_plan(values={"task": "x", **values})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_metric_checked_against_the_kind_of_the_data():
    from tailorlm.compare.plan import check_metric

    plan = default_plan(values={"task": "x", "eval.metric": "rouge_l"})
    check_metric(plan, "generation")
    with pytest.raises(TailorError, match="rouge_l' scores generation, and this is a "
                                          "classification task; valid: accuracy, macro_f1"):
        check_metric(plan, "classification")
    assert default_plan(["task=x"]).get("eval.tie_level") == 0.95


def test_prompt_only_keeps_the_prompt_family():
    from tailorlm.compare.plan import prompt_only

    plan, dropped = prompt_only(default_plan(["task=x", "methods.few_shot.n_demos=2"]))
    assert [m.method for m in plan.methods] == ["prompt_template", "few_shot",
                                                "instruction_search"]
    assert plan.optional == ["instruction_search"]  # still only where the budget holds it
    assert dropped == ["soft_prompt", "lora", "full", "lora+soft_prompt"]
    assert plan.to_dict()["methods"] == ["prompt_template", {"few_shot": {"n_demos": 2}},
                                         "instruction_search"]
    with pytest.raises(TailorError, match="none of this plan's methods .lora, full. works"):
        prompt_only(default_plan(["task=x", "methods=lora,full"]))


def test_a_comparison_recorded_before_a_key_existed_continues(tmp_path):
    """OUT/plan.yaml written before eval.tie_level (or any newer key) existed is the same plan
    when the new key holds its default; another value is another plan."""
    import yaml

    from tailorlm.compare.bakeoff import PLAN_FILE, _recorded_sizing

    plan = default_plan(["task=support_routing"])
    old = plan.to_dict()
    del old["eval"]["tie_level"], old["data"]["variant_field"]
    old["resolved"] = {"k": 4, "curve": [], "max_test": 50, "sensitivity": 0}
    (tmp_path / PLAN_FILE).write_text(yaml.safe_dump(old))
    (tmp_path / "results.jsonl").write_text('{"method": "lora"}\n')
    assert _recorded_sizing(plan, tmp_path)["k"] == 4
    with pytest.raises(TailorError, match="another plan.*eval.tie_level"):
        _recorded_sizing(default_plan(["task=support_routing", "eval.tie_level=0.9"]), tmp_path)
