"""prompt_template: zero-shot prompting with a template, optionally calibrated.

The model sees only the template around the input; nothing is trained. With `template: auto` the
built-in templates (methods/templates.py) are each scored on the data and the best is kept, so the
choice is measured rather than guessed: methods/template_search.py, the search every method's
template comes from (the learning methods train through the same choice). `calibrate` applies
contextual calibration (Zhao et al. 2021): `auto` keeps it only where it raises the plan's metric
on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailorlm.data.task import Task
from tailorlm.methods.contract import MethodConfig, MethodSpec, choose
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.index import register
from tailorlm.methods import template_search
from tailorlm.methods.selection import metric_name, rank, with_calibration
from tailorlm.methods.templates import resolve

NAME = "prompt_template"


@dataclass
class PromptTemplateConfig(MethodConfig):
    # A built-in name, "auto" (best built-in on validation data), or your own with {text}:
    # "Review: {text}\nSentiment:". Your own wording usually beats generic templates.
    template: str | dict = "auto"
    # Contextual calibration: "auto" keeps it where it raises validation accuracy.
    calibrate: str = "auto"

    def validate(self) -> None:
        choose("calibrate", self.calibrate, ("auto", "on", "off"))


def fit(backend, train: Task, val: Task | None, config: PromptTemplateConfig, *,
        seed: int = 0, work_dir=None, resume: bool = False,
        metric: str | None = None) -> PromptAdapter:
    """Choose the template by the shared prompt search (methods/template_search.py: every
    training and validation row judges; zero-shot learns nothing else from the data, so the
    training rows are fair judges), then calibration by the plan's `metric` on the same rows."""
    task = train.with_examples([])
    if config.template != "auto":
        template = resolve(config.template, train)
        if config.calibrate == "off":
            return PromptAdapter(NAME, config, task, template, choice={"template": template.name,
                                                                       "by": "pinned"})
        choice = template_search.pinned(template)
        judge = template_search.judge_rows(train, val, seed)
        raw = rank(backend, [PromptAdapter(NAME, config, task, template)], judge)[1]
    else:
        choice = template_search.search(backend, train, val, seed, metric)
        template, judge, raw = choice.template, choice.judge, choice.raw
    chosen = with_calibration(backend, PromptAdapter(NAME, config, task, template), raw, judge,
                              config.calibrate, metric)
    return PromptAdapter(NAME, config, task, template, bias=chosen.bias,
                         choice={**choice.record(), "calibrated": chosen.bias is not None,
                                 "metric": metric_name(train, metric)})


def from_state(config: PromptTemplateConfig, state: dict, directory=None) -> PromptAdapter:
    return PromptAdapter.from_state(NAME, config, state)


def unfitted(task: Task) -> PromptAdapter:
    """Zero-shot before any data is seen: the task's default template, uncalibrated."""
    config = PromptTemplateConfig(template="default", calibrate="off")
    return PromptAdapter(NAME, config, task.with_examples([]), resolve("default", task))


register(MethodSpec(NAME, PromptTemplateConfig, fit, from_state, family="prompt",
                     zero_shot_reference=True, break_even_reference=1, unfitted=unfitted))
