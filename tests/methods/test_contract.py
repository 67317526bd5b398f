"""What compare/ asks of methods through methods/contract.py instead of building or probing
adapters itself (issue 9 part 8)."""

from helpers import sentiment_task, tiny_backend
from tailorlm.methods import get_method
from tailorlm.methods.contract import train_report, zero_shot_adapter
from tailorlm.methods.templates import resolve


def test_the_budget_probe_gets_its_zero_shot_adapter_from_the_methods():
    task = sentiment_task(3)
    adapter = zero_shot_adapter(task)
    spec = get_method(adapter.method)
    assert spec.zero_shot_reference and spec.unfitted is not None
    assert adapter.template == resolve("default", task) and adapter.bias is None
    assert len(adapter.task) == 0  # no rows: nothing was fitted
    assert adapter.prompt(task.examples[0]).own  # it prompts like any adapter


def test_train_report_is_the_fit_record_or_nothing():
    task = sentiment_task(3)
    assert train_report(zero_shot_adapter(task)) == {}  # trains nothing
    spec = get_method("soft_prompt")
    config = spec.config.from_dict({"epochs": 1, "lr_factors": [1.0], "refit": False,
                                    "template": "default"})
    adapter = spec.fit(tiny_backend(), task, None, config, seed=0)
    report = train_report(adapter)
    assert report["tokens_seen"] > 0 and report["fit"]["refit"] is False
    report["tokens_seen"] = -1  # a copy: the adapter's own record is untouched
    assert train_report(adapter)["tokens_seen"] > 0


def test_side_costs_are_each_fitted_parts_train_cost():
    from tailorlm.methods import get_method

    lora, soft = get_method("lora"), get_method("soft_prompt")
    assert lora.side_costs == (lora.train_cost,)
    assert get_method("lora+soft_prompt").side_costs == (lora.train_cost, soft.train_cost)
    assert get_method("prompt_template").side_costs == (0.0,)
