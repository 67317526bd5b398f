"""The learning methods' fit protocol (methods/trainable.py): the template the prompt search chose,
early stopping, the lr trials, the refit on every row, and the plan's metric in every choice."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from helpers import sentiment_task, tiny_backend
from tailorlm.methods import get_method, template_search, trainable
from tailorlm.methods.soft_prompt import SoftPromptConfig
from tailorlm.methods.trainable import fit_trainable


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


class Recorder:
    """A one-parameter Trainable that records every row it trains on (as token-id tuples)."""

    def __init__(self, index: int):
        self.index = index
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple] = []

    def parameters(self):
        return [self.w]

    def state_dict(self):
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, sd):
        with torch.no_grad():
            self.w.copy_(sd["w"])

    def train(self, mode):
        pass

    def loss(self, batch):
        for ids, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist()):
            self.seen.append(tuple(i for i, m in zip(ids, mask) if m))
        return (self.w - 1.0).pow(2).sum(), 1


class Scripted:
    """start() for fit_trainable, and validation_parts scripted per trial: trial t's evaluations
    return scripts[t] in turn (then its last value)."""

    def __init__(self, scripts: list[list[float]]):
        self.scripts, self.made, self.calls, self.counts = scripts, [], [], {}
        self.current = None

    def start(self):
        t = Recorder(len(self.made))
        self.made.append(t)
        self.current = t.index
        return t, lambda template: SimpleNamespace(template=template)

    def parts(self, backend, adapter, val, metric=None, raw=None):
        self.calls.append(metric)
        count = self.counts.get(self.current, 0)
        self.counts[self.current] = count + 1
        script = self.scripts[self.current]
        return script[min(count, len(script) - 1)], -1.0


def scripted(monkeypatch, scripts):
    s = Scripted(scripts)
    monkeypatch.setattr(trainable, "validation_parts", s.parts)
    return s


def rows_of(backend, task, template_name="text_label"):
    from tailorlm.methods.templates import resolve

    return [tuple(ids) for ids, _ in trainable.encode_rows(backend, resolve(template_name, task),
                                                           task)]


def test_early_stopping_stops_when_validation_stops_improving_then_refits_every_row(
        backend, monkeypatch, tmp_path):
    task = sentiment_task(8)  # 16 rows: 12 trained in the trial, 4 judge; 2 steps an epoch
    # shares of the 4 judged rows; 0.25 is more than a standard error under 0.75 (tie_tolerance)
    s = scripted(monkeypatch, [[0.25, 0.5, 0.75, 0.25, 0.25, 1.0]])
    config = SoftPromptConfig(epochs=10, batch_size=6, patience=2, template="text_label",
                              min_epochs=0)
    adapter, kept = fit_trainable(backend, task, None, config, s.start, seed=0,
                                  work_dir=tmp_path, metric="macro_f1")
    trial, refit = s.made
    # evaluated once an epoch: best at epoch 3, two evaluations without a new best, stopped
    assert s.counts[0] == 5
    assert len(trial.seen) == 5 * 12
    # the refit: a fresh start, every training row, for the best trial's 3 epochs
    assert kept is refit and sorted(set(refit.seen)) == sorted(set(rows_of(backend, task)))
    assert len(refit.seen) == 3 * 16
    record = json.loads((tmp_path / "fit.json").read_text())
    assert record["trials"][0]["best_epoch"] == 3 and record["trials"][0]["stopped_early"]
    # the plan's metric reached every validation pass
    assert set(s.calls) == {"macro_f1"}


def test_a_later_epoch_the_judge_cannot_tell_from_the_best_is_kept(backend, monkeypatch):
    task = sentiment_task(8)  # 4 judged rows: a tie is within 0.25 (one row) of the best
    s = scripted(monkeypatch, [[0.5, 0.75, 0.5, 0.0, 0.0, 1.0]])
    config = SoftPromptConfig(epochs=10, batch_size=6, patience=2, template="text_label",
                              min_epochs=0)
    adapter, kept = fit_trainable(backend, task, None, config, s.start, seed=0)
    trial, refit = s.made
    # epoch 3 (0.5) ties epoch 2 (0.75): it is kept, and patience counts from it
    assert s.counts[0] == 5
    fit = adapter.train_result["fit"]
    assert fit["trials"][0]["best_epoch"] == 3 and fit["epochs"] == 3
    assert len(refit.seen) == 3 * 16
    # the record's validation score is the best one reached
    assert fit["val_metric"] == 0.75


def test_no_fit_is_kept_shorter_than_min_epochs(backend, monkeypatch, tmp_path):
    task = sentiment_task(8)  # 12 rows trained in a trial, 2 steps an epoch
    # validation would peak at its first pass; with min_epochs 4 the first pass is at epoch 4
    s = scripted(monkeypatch, [[0.9, 0.5, 0.5, 0.5]])
    config = SoftPromptConfig(epochs=10, batch_size=6, patience=2, template="text_label",
                              min_epochs=4)
    adapter, kept = fit_trainable(backend, task, None, config, s.start, seed=0,
                                  work_dir=tmp_path)
    trial, refit = s.made
    assert s.counts[0] == 3  # epochs 4 (the best), 5, 6: then patience ends it
    assert len(trial.seen) == 6 * 12
    fit = adapter.train_result["fit"]
    assert fit["epochs"] == 4 and fit["trials"][0]["best_epoch"] == 4
    assert len(refit.seen) == 4 * 16 and fit["min_epochs"] == 4
    # a floor above the cap is the cap: validated once, at the last step
    s = scripted(monkeypatch, [[0.9]])
    config = SoftPromptConfig(epochs=3, batch_size=6, template="text_label", min_epochs=8)
    adapter, _ = fit_trainable(backend, task, None, config, s.start, seed=0)
    assert s.counts[0] == 1 and adapter.train_result["fit"]["epochs"] == 3
    assert adapter.train_result["fit"]["min_epochs"] == 3


def test_prompt_vector_methods_keep_five_epochs_at_least_weight_methods_none():
    from tailorlm.methods.full import FullConfig
    from tailorlm.methods.lora import LoraConfig
    from tailorlm.methods.prefix import PrefixConfig

    assert SoftPromptConfig().min_epochs == PrefixConfig().min_epochs == 5
    assert LoraConfig().min_epochs == FullConfig().min_epochs == 0
    hybrid = get_method("lora+soft_prompt").config.from_dict({})
    assert [part.min_epochs for part in hybrid.parts()] == [0, 5]
    with pytest.raises(Exception, match="min_epochs must be a whole number"):
        SoftPromptConfig(min_epochs=-1)


def test_the_record_says_rows_lr_epochs_and_template(backend, monkeypatch):
    task = sentiment_task(8)
    s = scripted(monkeypatch, [[0.5, 0.75, 0.25, 0.25]])
    config = SoftPromptConfig(epochs=4, batch_size=6, patience=2, template="text_label",
                              lr=0.01, min_epochs=0)
    start = s.start
    adapter, _ = fit_trainable(backend, task, None, config, start, seed=0)
    r = adapter.train_result
    assert r["n_train"] == 16 and r["n_val"] == 4  # trained on every row after the refit
    assert r["fit"]["refit"] and r["fit"]["epochs"] == 2 and r["fit"]["lr"] == 0.01
    assert r["fit"]["n_held_out"] == 4 and len(r["fit"]["trials"]) == 1
    assert r["template"]["template"] == "text_label" and r["template"]["by"] == "pinned"


def test_the_lr_trials_keep_the_best_and_the_default_on_a_tie(backend, monkeypatch, tmp_path):
    task = sentiment_task(8)
    # factors 0.3, 1, 3: the third is best; its best epoch (2) is what the refit runs
    s = scripted(monkeypatch, [[0.25, 0.0, 0.0], [0.5, 0.0, 0.0], [0.5, 1.0, 0.5, 0.5]])
    config = SoftPromptConfig(epochs=6, batch_size=6, patience=2, template="text_label",
                              lr=0.01, lr_factors=[0.3, 1, 3], min_epochs=0)
    start = s.start
    fitted, kept = fit_trainable(backend, task, None, config, start, seed=0, work_dir=tmp_path)
    fit = fitted.train_result["fit"]
    assert fit["lr"] == pytest.approx(0.03) and fit["epochs"] == 2
    assert [t["lr"] for t in fit["trials"]] == pytest.approx([0.003, 0.01, 0.03])
    assert len(s.made) == 4 and kept is s.made[3] and len(kept.seen) == 2 * 16
    # a tie goes to the factor nearest 1: the method's own default
    s = scripted(monkeypatch, [[0.75, 0.25, 0.25], [0.75, 0.25, 0.25], [0.75, 0.25, 0.25],
                               [0.0]])
    fitted, _ = fit_trainable(backend, task, None, config, s.start, seed=0)
    assert fitted.train_result["fit"]["lr"] == pytest.approx(0.01)


def test_with_validation_rows_nothing_is_held_out_nor_refitted(backend, monkeypatch):
    task, val = sentiment_task(8), sentiment_task(3)
    s = scripted(monkeypatch, [[0.5, 0.9, 0.6, 0.6]])
    config = SoftPromptConfig(epochs=4, batch_size=8, patience=2, template="text_label")

    start = s.start
    fitted, kept = fit_trainable(backend, task, val, config, start, seed=0)
    r = fitted.train_result
    assert len(s.made) == 1 and not r["fit"]["refit"] and r["n_train"] == 16
    assert r["n_val"] == 6 and len(kept.seen) == 4 * 16  # stopped after epoch 4 (the cap)


def test_a_resumed_fit_skips_its_finished_trials(backend, monkeypatch, tmp_path):
    task = sentiment_task(8)
    config = SoftPromptConfig(epochs=3, batch_size=6, patience=0, template="text_label",
                              lr_factors=[1, 3])
    s = scripted(monkeypatch, [[0.5], [0.6]])

    start = s.start
    first, _ = fit_trainable(backend, task, None, config, start, seed=0, work_dir=tmp_path)
    made = len(s.made)
    again, _ = fit_trainable(backend, task, None, config, start, seed=0, work_dir=tmp_path,
                             resume=True)
    assert made == 3 and len(s.made) == 4  # only the refit is started again: it resumes
    assert sum(len(t.seen) for t in s.made[3:]) == 0  # ... at its last step: nothing trained
    assert again.train_result["fit"] == first.train_result["fit"]
    with pytest.raises(Exception, match="pass --resume"):
        fit_trainable(backend, task, None, config, start, seed=0, work_dir=tmp_path)


@pytest.mark.parametrize("method", ["soft_prompt", "prefix", "lora", "full"])
def test_learning_methods_train_through_the_searched_template_or_a_pinned_one(backend, method,
                                                                               monkeypatch):
    task = sentiment_task(4)
    spec = get_method(method)
    fast = {"epochs": 1, "batch_size": 8, "n_virtual": 2} if method in (
        "soft_prompt", "prefix") else {"epochs": 1, "batch_size": 8}
    searched = template_search.search(backend, task, None, seed=0)
    adapter = spec.fit(backend, task, None, spec.config.from_dict(fast), seed=0)
    assert adapter.template == searched.template
    assert adapter.train_result["template"]["template"] == searched.template.name
    assert adapter.prompt(task.examples[0]) == searched.template.prompt(task, task.examples[0])
    # pinned: the user's own template, no search
    monkeypatch.setattr(template_search, "search", lambda *a, **k: pytest.fail("searched"))
    pinned = spec.fit(backend, task, None, spec.config.from_dict(
        {**fast, "template": "Review: {text}\nSentiment:"}), seed=0)
    assert pinned.prompt(task.examples[0]).own == f"Review: {task.examples[0].input}\nSentiment:"
    assert pinned.train_result["template"]["by"] == "pinned"


def test_a_hybrids_input_side_reads_the_weight_sides_template(backend):
    task = sentiment_task(4)
    spec = get_method("lora+soft_prompt")
    config = spec.config.from_dict({"epochs": 1, "input.n_virtual": 2})
    assert config.input.template == "auto"
    adapter = spec.fit(backend, task, None, config, seed=0)
    assert adapter.fallback.template == adapter.weight.template


def test_the_plans_metric_reaches_a_learning_methods_checkpoint_choice(backend, monkeypatch):
    from tailorlm.methods import selection

    seen = []
    real = selection.label_metric
    monkeypatch.setattr(selection, "label_metric",
                        lambda scores, val, metric: seen.append(metric) or real(scores, val,
                                                                                metric))
    task = sentiment_task(4)
    spec = get_method("soft_prompt")
    adapter = spec.fit(backend, task, None, spec.config.from_dict(
        {"epochs": 2, "n_virtual": 2, "template": "text_label"}), seed=0, metric="macro_f1")
    assert seen and set(seen) == {"macro_f1"}
    assert adapter.train_result["fit"]["metric"] == "macro_f1"


def test_one_row_per_class_holds_nothing_out_and_fits(backend):
    """k=1 per class: a stratified split can spare no row, so every row trains (no early
    stopping) instead of failing on an empty validation set."""
    from tailorlm.data.task import Example, Task

    labels = [f"c{i}" for i in range(10)]
    task = Task(name="ten", kind="classification", labels=labels,
                examples=[Example(input=f"text {i}", target=lab, label=lab)
                          for i, lab in enumerate(labels)])
    fit_rows, judge = trainable.held_out(task, None, seed=0)
    assert judge is None and len(fit_rows) == 10
    spec = get_method("soft_prompt")
    adapter = spec.fit(backend, task, None, spec.config.from_dict({"epochs": 1, "n_virtual": 2}),
                       seed=0)
    assert adapter.held_out == []
