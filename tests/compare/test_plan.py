from pathlib import Path

import pytest

from tailorlm.compare.plan import DEFAULT_METHODS, default_plan, load_plan, method_config
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
    assert [m.method for m in plan.methods] == DEFAULT_METHODS
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
