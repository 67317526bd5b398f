"""A tuned adapter at inference: what a learning method's saved adapter is once training is over.

A method that learns (soft_prompt, prefix, lora, full and the hybrids built on them) ends with
weights or vectors plus the words around them. Using it needs no training code at all:

    config    the method's options (`TrainFields` and the method's own), checked when read;
              loading a saved adapter rebuilds them from adapter.json
    prompt    the template the fit chose (methods/templates.py), without demonstrations:
                  adapter.prompt(example)         -> the text the model reads
                  adapter.continuations(task)     -> [" positive", " negative"]: what is scored
    task      labels, verbalizer and description; no training rows
    weights   the method's own part, given by its subclass of `TunedAdapter`: `bind(backend)`
              (how the backend computes with them), `save_files` and `state`

    load_adapter(folder)  -> spec.from_state(config, state, folder) -> a TunedAdapter subclass
    adapter.bind(backend) -> the backend to score or generate with

Fitting lives in methods/trainable.py (the fit protocol, which imports the training loop), and
a method imports it only inside its `fit`: loading, binding and serving an adapter never import
engine/train.py. The constants below are the fit protocol's numbers that budgets are sized by
(compare/budget.py), kept here so that sizing a plan needs no training code either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt
from tailorlm.engine.train_config import TrainConfig
from tailorlm.errors import TailorError
from tailorlm.methods.contract import MethodConfig
from tailorlm.methods.templates import Template

__all__ = ["LR_FACTORS", "MAX_EVALUATIONS", "VAL_FRACTION", "TrainFields", "TunedAdapter"]

MAX_EVALUATIONS = 10  # validation passes (and best-checkpoint candidates) per trial, at most
VAL_FRACTION = 0.25  # carved from the training data for the choices when no --val is given
LR_FACTORS = [0.3, 1.0, 3.0]  # the lr choice a plan asks for where its budget allows


@dataclass
class TrainFields(MethodConfig):
    """Training options every learning method has; each method sets its own `lr` default."""

    # The cap: training stops earlier once validation stops improving (`patience`).
    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    # Multiples of `lr` tried on held-out rows, the best kept: [0.3, 1, 3] costs three trials.
    lr_factors: list = field(default_factory=lambda: [1.0])
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # linear | cosine | constant
    patience: int = 2  # evaluations without a new best before stopping; 0 = train to the cap
    # The fewest epochs a fit keeps (at most the cap): validation, and so the best checkpoint and
    # early stopping, starts after them. 0 for the weight methods; the prompt-vector methods
    # (soft_prompt, prefix) set 5: on 8 held-out rows their validation can peak by chance at
    # epoch 2 (sst2 K=16, docs/benchmarks.md), a fit too short to learn much.
    min_epochs: int = 0
    # After choosing lr and epochs on held-out rows, train again on every row with them.
    refit: bool = True
    # bfloat16 autocast: "auto" = where the CPU/GPU computes it natively. Off by default: on sst2
    # (bench/vs_trainer.py, docs/benchmarks.md) it trained 1.2-1.9x faster here but ended 1.5-3.8
    # points lower for soft_prompt, lora and full alike; opt in with --set METHOD.bf16=auto.
    bf16: bool | str = False
    # The prompt the method learns to answer after: "auto" = the shared prompt search's choice
    # on the same data (methods/template_search.py), or a built-in name / your own template.
    template: str | dict = "auto"

    def validate(self) -> None:
        self.train_config(seed=0)  # TrainConfig checks the values and says how to fix them
        factors = self.lr_factors
        if isinstance(factors, (int, float)) and not isinstance(factors, bool):
            factors = [factors]
        if not (isinstance(factors, (list, tuple)) and factors and all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0
                for f in factors)):
            raise TailorError(f"lr_factors is a list of positive multiples of lr, e.g. [0.3, 1, 3]"
                              f" (three trials) or [1] (none), not {self.lr_factors!r}")
        self.lr_factors = [float(f) for f in factors]
        if (not isinstance(self.min_epochs, int) or isinstance(self.min_epochs, bool)
                or self.min_epochs < 0):
            raise TailorError(f"min_epochs must be a whole number of at least 0 (0 = validation "
                              f"from the first epoch), not {self.min_epochs!r}")
        if not isinstance(self.refit, bool):
            raise TailorError(f"refit must be true or false, not {self.refit!r}")

    def train_config(self, seed: int, **changes) -> TrainConfig:
        return TrainConfig(**{**dict(epochs=self.epochs, batch_size=self.batch_size,
                                     grad_accum=self.grad_accum, lr=self.lr,
                                     weight_decay=self.weight_decay,
                                     warmup_ratio=self.warmup_ratio, schedule=self.schedule,
                                     patience=self.patience, bf16=self.bf16, seed=seed),
                              **changes})


@dataclass
class TunedAdapter:
    """Template prompting for trained methods; subclasses add bind, save_files, state."""

    method: str
    config: TrainFields
    task: Task  # labels, verbalizer, description; no examples
    template: Template
    train_result: dict = field(default_factory=dict)

    def prompt(self, example: Example) -> Prompt:
        return self.template.prompt(self.task, example)

    def continuations(self, task: Task) -> list[str]:
        return self.template.continuations(task)

    def adjust(self, logprobs: np.ndarray) -> np.ndarray:
        return logprobs

    @property
    def stop(self) -> tuple[str, ...]:
        return ("\n",)

    @property
    def held_out(self) -> list[str]:
        """Training rows kept for validation, not trained on (methods/contract.py)."""
        return self.train_result.get("held_out", [])

    def reworded(self, template: Template):
        """The trained weights/vectors read with other wording (prompt sensitivity, compare/)."""
        return dataclasses.replace(self, template=template)

    def task_state(self) -> dict:
        t = self.task
        return {"task": {"name": t.name, "kind": t.kind, "labels": t.labels,
                         "verbalizer": t.verbalizer, "description": t.description},
                "template": {k: getattr(self.template, k) for k in
                             ("name", "query", "answer", "instruction", "separator",
                              "answer_space")},
                "train_result": self.train_result}

    @staticmethod
    def parts_from_state(state: dict) -> tuple[Task, Template, dict]:
        t = state["task"]
        task = Task(name=t["name"], kind=t["kind"], examples=[], labels=t["labels"],
                    verbalizer=t["verbalizer"], description=t["description"])
        return task, Template(**state["template"]), state.get("train_result", {})
