"""What every method that learns shares: its training options, its rows, and its prompt.

A trained method reads the same template as prompt_template (`Text: {text}\\nLabel:` unless told),
without demonstrations, and learns to say the label's words (or the target text) after it:

    rows:   [prompt ids][target ids][eos]       loss on the target and eos only
    fit:    engine.train.train(trainable, rows, evaluate=validation gold log-prob, ...)

A method supplies a `Trainable` (engine/train.py: its parameters and its loss on a batch) and an
adapter class built on `TunedAdapter`, which gives it the prompt, the label continuations and the
task; the method adds `bind` (how the backend computes with it), `save_files` and `state`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailorlm.data.sample import split
from tailorlm.data.task import Example, Task
from tailorlm.engine.evaluate import label_scores, quick_score
from tailorlm.engine.prompt import Prompt
from tailorlm.engine.prompt import prompt_ids as encoded_prompt
from tailorlm.engine.train import TrainConfig, TrainResult, train
from tailorlm.methods.contract import MethodConfig, example_id
from tailorlm.methods.selection import validation_subset
from tailorlm.methods.templates import Template, resolve
from tailorlm.models.backend import Backend

MAX_EVALUATIONS = 5  # validation passes (and best-checkpoint candidates) per fit, at most
VAL_FRACTION = 0.25  # carved from the training data for early stopping when no --val is given


@dataclass
class TrainFields(MethodConfig):
    """Training options every learning method has; each method sets its own `lr` default."""

    epochs: int = 5
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # linear | cosine | constant
    patience: int = 0  # evaluations without improvement before stopping; 0 = never
    # bfloat16 autocast: "auto" = where the CPU/GPU computes it natively. Off by default: on sst2
    # (bench/vs_trainer.py, docs/benchmarks.md) it trained 1.2-1.9x faster here but ended 1.5-3.8
    # points lower for soft_prompt, lora and full alike; opt in with --set METHOD.bf16=auto.
    bf16: bool | str = False
    # The prompt the method learns to answer after; "default" = the task kind's first built-in
    # ("Text: {text}\nLabel:" or "Input: {text}\nOutput:"). Tuning makes the wording matter less.
    template: str | dict = "default"

    def validate(self) -> None:
        self.train_config(seed=0)  # TrainConfig checks the values and says how to fix them

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                           grad_accum=self.grad_accum, lr=self.lr,
                           weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio,
                           schedule=self.schedule, patience=self.patience, bf16=self.bf16,
                           seed=seed)


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


def validation_score(backend: Backend, adapter, val: Task) -> float:
    """What early stopping and the best checkpoint go by; higher is better.

    Classification: the mean log-probability of the gold label, normalised over the label set. A
    few dozen validation rows make accuracy a coarse, often tied signal (ties keep the earliest
    checkpoint); the gold log-probability moves with every step that helps. Generation: the task's
    metric on greedy outputs.
    """
    if val.kind != "classification":
        return quick_score(backend, adapter, val)
    scores = label_scores(backend, adapter, val)
    normalised = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    gold = np.array([val.labels.index(e.label) for e in val.examples])
    return float(normalised[np.arange(len(gold)), gold].mean())


def encode_rows(backend: Backend, template: Template, task: Task) -> list[tuple[list, list]]:
    """(ids, target_mask) per example, tokenized as the engine reads it: shared, own, answer."""
    eos = backend.tokenizer.eos_token_id
    rows = []
    for e in task.examples:
        p = template.prompt(task, e)
        prompt_ids = encoded_prompt(backend, p)  # BOS first where the tokenizer adds one
        target_ids = backend.encode(template.answer_space + e.target) + [eos]
        rows.append((prompt_ids + target_ids, [0] * len(prompt_ids) + [1] * len(target_ids)))
    return rows


def spaced(config: TrainConfig, n_rows: int) -> TrainConfig:
    """At most MAX_EVALUATIONS evaluations in a run: many epochs over a few rows (20 epochs of 12
    rows is 30 steps) would otherwise evaluate every epoch. Resume checkpoints go by the clock
    (TrainConfig.checkpoint_seconds), not by evaluations."""
    if config.epochs <= MAX_EVALUATIONS:
        return config
    steps = math.ceil(n_rows / (config.batch_size * config.grad_accum)) * config.epochs
    return dataclasses.replace(config, eval_every=math.ceil(steps / MAX_EVALUATIONS))


def fit_trainable(backend: Backend, train_task: Task, val: Task | None, config: TrainFields,
                  trainable, make_adapter, *, seed: int, work_dir=None,
                  resume: bool = False) -> tuple[object, TrainResult]:
    """Train `trainable` on the task; `make_adapter()` wraps its current weights as an adapter.

    Without `val`, a quarter of the training data (stratified) is held out for early stopping and
    for choosing the best checkpoint; that share is not trained on.
    """
    template = resolve(config.template, train_task)
    given = train_task
    if (val is None or not len(val)) and len(train_task) >= 8:
        if train_task.kind == "classification":
            train_task, val = split(train_task, VAL_FRACTION, seed)
        else:
            cut = int(len(train_task) * (1 - VAL_FRACTION))
            train_task, val = (train_task.with_examples(train_task.examples[:cut]),
                               train_task.with_examples(train_task.examples[cut:]))
    judge = validation_subset(val, seed) if val is not None and len(val) else None
    rows = encode_rows(backend, template, train_task)
    fingerprint = hashlib.sha256(json.dumps(
        [train_task.fingerprint(), config.to_dict(), backend.identity, backend.sha256],
        sort_keys=True, default=str).encode()).hexdigest()
    evaluate = None
    if judge is not None:
        evaluate = lambda: validation_score(backend, make_adapter(template), judge)  # noqa: E731
    out_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tailorlm-train-"))
    result = train(trainable, rows, config=spaced(config.train_config(seed), len(rows)),
                   out_dir=out_dir,
                   evaluate=evaluate, fingerprint=fingerprint, resume=resume,
                   pad_id=backend.tokenizer.pad_token_id or 0)
    adapter = make_adapter(template)
    kept = set(train_task.examples)
    adapter.train_result = {"steps": result.steps, "best_metric": result.best_metric,
                            "best_step": result.best_step, "tokens_seen": result.tokens_seen,
                            "train_seconds": result.seconds, "stopped_early": result.stopped_early,
                            "n_train": len(train_task), "n_val": len(judge) if judge else 0,
                            "held_out": [example_id(e) for e in given.examples
                                         if e not in kept]}
    return adapter, result
