"""prompt_template: zero-shot prompting with a template, optionally calibrated.

The model sees only the template around the input; nothing is trained. With `template: auto` the
built-in templates (methods/templates.py) are each scored on validation data and the best is kept,
so the choice is measured rather than guessed. `calibrate` applies contextual calibration (Zhao et
al. 2021): `auto` keeps it only where it helps on validation.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailorlm.data.task import Task
from tailorlm.methods.contract import MethodConfig, MethodSpec, choose
from tailorlm.methods.prompt_adapter import PromptAdapter
from tailorlm.methods.index import register
from tailorlm.methods.selection import rank, validation_subset, with_calibration
from tailorlm.methods.templates import builtin_templates, resolve

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
        seed: int = 0, work_dir=None, resume: bool = False) -> PromptAdapter:
    """Choose the template (and calibration) on `val`, or on `train` when there is none:
    zero-shot learns nothing else from the data, so the training examples are fair judges."""
    judge = validation_subset(val if val is not None and len(val) else train, seed)
    if config.template == "auto":
        templates = list(builtin_templates(train).values())
    else:
        templates = [resolve(config.template, train)]
    task = train.with_examples([])
    candidates = [PromptAdapter(NAME, config, task, t) for t in templates]
    if len(candidates) == 1 and config.calibrate == "off":
        return candidates[0]
    # few_shot asks for the same zero-shot ranking (uncalibrated): in one process it is made once
    key = (id(backend.model), backend.sha256, judge.fingerprint(), tuple(templates))
    if key not in _RANKINGS:
        _RANKINGS[key] = rank(backend, candidates, judge)
    i, raw = _RANKINGS[key]
    chosen = with_calibration(backend, candidates[i], raw, judge, config.calibrate)
    return PromptAdapter(NAME, config, task, chosen.template, bias=chosen.bias)


_RANKINGS: dict = {}  # (model, judge data, candidates) -> (best index, its raw label scores)


def from_state(config: PromptTemplateConfig, state: dict, directory=None) -> PromptAdapter:
    return PromptAdapter.from_state(NAME, config, state)


register(MethodSpec(NAME, PromptTemplateConfig, fit, from_state, family="prompt",
                     zero_shot_reference=True, break_even_reference=1))
