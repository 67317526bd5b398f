"""How every method that learns is fitted: its rows, its prompt, and the protocol that chooses
how long and how fast it trains.

This is fitting code (it imports the training loop, engine/train.py): a method imports it inside
its `fit` only. What a fitted adapter needs at inference (its config fields `TrainFields`, the
`TunedAdapter` base, the protocol's constants) is in methods/tuned.py.

Prompt-based fine-tuning (Gao et al. 2021): a learning method reads the template the shared prompt
search chose on the same training data (methods/template_search.py; `template: auto`, or a pinned
one), without demonstrations, and learns to say the label's words (or the target text) after it:

    rows:   [prompt ids][target ids][eos]       loss on the target and eos only

The fit protocol (`fit_trainable`), on n training rows:

    held-out  with no validation data, a quarter of the rows (stratified) is held out: the judge
    trials    for each lr in lr * lr_factors: train on the rest up to `epochs` (the cap), evaluating
              on the judge (at most MAX_EVALUATIONS times, none before `min_epochs`); stop
              after `patience` evaluations without a new best; keep the best evaluation (the
              plan's metric, ties broken by the gold label's log-probability:
              methods/selection.judged), or a later one within a standard error of it
              (engine/train_config.tie_tolerance: on 24 judged rows, 1.6 rows' worth): so few
              rows cannot tell them apart, and few-sample fine-tuning gains from training longer
              (on trec K=16, seed 0, lora kept epoch 7 of 10 and scored 0.810 on test; all 10
              epochs, 0.858)
    choose    the trial with the best validation score: its lr, and its best epoch
    refit     (`refit: true`, the default) train again on all n rows with that lr for that many
              epochs, without validation: no row of a tiny sample is left untrained. Cost: one
              more fit of n rows for the chosen epochs, about (1 + 1/0.75) times the rows the
              chosen trial trained on before it stopped; the report's fit seconds include it.
    given val with validation data from the user nothing is held out, so nothing is refitted:
              the best trial's best checkpoint is kept

`n_train` in the fit's record is the rows the kept weights were trained on. Under `fit` in the
record: the chosen lr and epochs, every trial's score, and the selection and refit seconds.

A method supplies `start()`: a fresh `Trainable` (engine/train.py: its parameters and its loss on
a batch) with the same initial weights each call, and the function that wraps its current weights
as an adapter built on `TunedAdapter` (methods/tuned.py), which gives it the prompt, the label
continuations and the task; the method adds `bind` (how the backend computes with it),
`save_files` and `state`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

from tailorlm.data.sample import split
from tailorlm.data.task import Task
from tailorlm.engine.prompt import prompt_ids as encoded_prompt
from tailorlm.engine.train import TrainConfig, train
from tailorlm.errors import TailorError
from tailorlm.methods import template_search
from tailorlm.methods.contract import example_id
from tailorlm.methods.selection import judged, metric_name, validation_parts, validation_subset
from tailorlm.methods.templates import Template, resolve
from tailorlm.methods.tuned import MAX_EVALUATIONS, VAL_FRACTION, TrainFields
from tailorlm.models.backend import Backend


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


def choose_template(backend: Backend, config: TrainFields, train: Task, val: Task | None,
                    seed: int, metric: str | None = None) -> template_search.TemplateChoice:
    """The template a learning method trains through: the shared search's, or the pinned one."""
    if config.template == "auto":
        return template_search.search(backend, train, val, seed, metric)
    return template_search.pinned(resolve(config.template, train))


def held_out(train: Task, val: Task | None, seed: int) -> tuple[Task, Task | None]:
    """(rows to train on, rows to judge on): the user's validation rows, else a quarter of the
    training rows (stratified; the last quarter for generation), else none: under 8 rows, or
    when no label has two rows to spare one (k=1 per class), every row trains."""
    if val is not None and len(val):
        return train, val
    if len(train) < 8:
        return train, None
    if train.kind == "classification":
        fit_rows, judge = split(train, VAL_FRACTION, seed)
        return (fit_rows, judge) if len(judge) else (train, None)
    cut = int(len(train) * (1 - VAL_FRACTION))
    return train.with_examples(train.examples[:cut]), train.with_examples(train.examples[cut:])


def fit_trainable(backend: Backend, train_task: Task, val: Task | None, config: TrainFields,
                  start, *, seed: int, work_dir=None, resume: bool = False,
                  metric: str | None = None):
    """Fit by the protocol of the module doc; returns (adapter, its trainable).

    `start()` returns (a fresh trainable, `to_adapter(template)`: its current weights as an
    adapter). Trials run one at a time, each on a fresh trainable; a resumed fit skips the trials
    recorded in WORK/fit.json and continues the one in progress from its checkpoint.
    """
    choice = choose_template(backend, config, train_task, val, seed, metric)
    template = choice.template
    given_val = val is not None and len(val) > 0
    fit_task, judge_task = held_out(train_task, val, seed)
    judge = validation_subset(judge_task, seed) if judge_task is not None else None
    refit = judge is not None and not given_val and config.refit
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="tailorlm-train-"))
    record_path = root / "fit.json"  # the finished trials, for a resumed fit
    if record_path.exists() and not resume:
        raise TailorError(f"{root} holds checkpoints of an earlier run: pass --resume to "
                          f"continue it, or choose a new --out")
    record = json.loads(record_path.read_text()) if resume and record_path.exists() else {}
    fingerprint = hashlib.sha256(json.dumps(
        [train_task.fingerprint(), config.to_dict(), backend.identity, backend.sha256,
         dataclasses.asdict(template), metric],
        sort_keys=True, default=str).encode()).hexdigest()
    pad_id = backend.tokenizer.pad_token_id or 0
    rows = encode_rows(backend, template, fit_task)
    per_epoch = math.ceil(len(rows) / (config.batch_size * config.grad_accum))
    factors = config.lr_factors if judge is not None else [1.0]
    min_steps = min(config.min_epochs, config.epochs) * per_epoch  # validation starts here
    # The fit whose weights are kept writes to `root` (train_log.jsonl, checkpoints/): the refit,
    # or the one trial when there is nothing to choose; trials that only choose, to root/trialN.
    alone = not refit and len(factors) == 1
    trial_dir = lambda i: root if alone else root / f"trial{i}"  # noqa: E731

    trials, kept = list(record.get("trials", [])), None  # kept: (trial, trainable, to_adapter)
    for i, factor in enumerate(factors):
        if i < len(trials):
            continue  # finished in an earlier process
        trainable, to_adapter = start()
        history: list[tuple[float, float]] = []  # (judged value, the plan's metric) per pass

        def evaluate(to_adapter=to_adapter, history=history) -> float:
            parts = validation_parts(backend, to_adapter(template), judge, metric)
            history.append((judged(*parts), parts[0]))
            return history[-1][0]

        tc = config.train_config(seed, lr=config.lr * factor, min_steps=min_steps,
                                 tie_rows=len(judge) if judge is not None else 0)
        result = train(trainable, rows, config=spaced(tc, len(rows)), out_dir=trial_dir(i),
                       evaluate=evaluate if judge is not None else None,
                       fingerprint=fingerprint, resume=resume,
                       pad_id=pad_id)
        best_step = result.best_step or result.steps
        trial = {"lr": tc.lr, "factor": factor, "val": result.best_metric,
                 "val_metric": next((m for v, m in history if v == result.best_metric), None),
                 "best_epoch": max(1, math.ceil(best_step / per_epoch)),
                 "epochs_run": round(result.steps / per_epoch, 2),
                 "stopped_early": result.stopped_early, "seconds": round(result.seconds, 2),
                 "tokens_seen": result.tokens_seen, "steps": result.steps,
                 "best_step": result.best_step}
        trials.append(trial)
        if not refit and (kept is None or _better(trial, kept[0])):
            if kept is not None:
                shutil.rmtree(trial_dir(trials.index(kept[0])), ignore_errors=True)
            kept = (trial, trainable, to_adapter)
        elif not alone:
            shutil.rmtree(trial_dir(i), ignore_errors=True)  # weights no longer needed
        del trainable
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"trials": trials}))

    best_i = max(range(len(trials)), key=lambda j: (_rank(trials[j]), -j))
    best = trials[best_i]
    refit_seconds = refit_tokens = 0
    steps = best["steps"]
    if refit:
        trainable, to_adapter = start()
        epochs = best["best_epoch"]
        result = train(trainable, encode_rows(backend, template, train_task),
                       config=spaced(config.train_config(seed, lr=best["lr"], epochs=epochs,
                                                         patience=0), len(train_task)),
                       out_dir=root, evaluate=None, fingerprint=fingerprint,
                       resume=resume, pad_id=pad_id)
        refit_seconds, refit_tokens, n_train = result.seconds, result.tokens_seen, len(train_task)
        steps = result.steps
    else:
        epochs = best["best_epoch"] if judge is not None else config.epochs
        n_train = len(fit_task)
        if kept is not None and kept[0] is best:
            trainable, to_adapter = kept[1], kept[2]
        else:  # finished in an earlier process: its checkpoints hold the best weights
            trainable, to_adapter = start()
            train(trainable, rows, config=spaced(config.train_config(seed, lr=best["lr"]),
                                                 len(rows)),
                  out_dir=trial_dir(best_i), evaluate=None, fingerprint=fingerprint,
                  resume=True, pad_id=pad_id)
    adapter = to_adapter(template)
    trained_on = set(fit_task.examples)
    selection_seconds = sum(t["seconds"] for t in trials)
    adapter.train_result = {
        "steps": steps, "best_metric": best["val"], "best_step": best["best_step"],
        "tokens_seen": sum(t["tokens_seen"] for t in trials) + refit_tokens,
        "train_seconds": selection_seconds + refit_seconds,
        "stopped_early": best["stopped_early"], "n_train": n_train,
        "n_val": len(judge) if judge is not None else 0,
        # rows held out for validation and never trained on (none after a refit on every row)
        "held_out": [] if refit else [example_id(e) for e in train_task.examples
                                      if e not in trained_on],
        "template": choice.record(),
        "fit": {"lr": best["lr"], "epochs": epochs, "epoch_cap": config.epochs,
                "patience": config.patience, "min_epochs": min(config.min_epochs, config.epochs),
                "refit": refit, "metric": metric_name(train_task, metric),
                "val_metric": best["val_metric"], "n_held_out": len(train_task) - len(fit_task),
                "selection_seconds": round(selection_seconds, 2),
                "refit_seconds": round(refit_seconds, 2),
                "trials": [{k: t[k] for k in ("lr", "val_metric", "best_epoch", "epochs_run",
                                               "stopped_early", "seconds")} for t in trials]}}
    if work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return adapter, trainable


def _rank(trial: dict) -> tuple:
    """Higher is better: the validation value, then the lr factor nearest 1 (the default)."""
    val = trial["val"] if trial["val"] is not None else -math.inf
    return (val, -abs(math.log(trial["factor"])))


def _better(trial: dict, other: dict) -> bool:
    return _rank(trial) > _rank(other)
