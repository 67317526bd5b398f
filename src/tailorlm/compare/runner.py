"""Run methods side by side on one task and append one result row per run.

For each run (method, config, seed, k): sample k examples per class from the training data
(seeded), fit, save the adapter, evaluate on the test set, and append a row to
`OUT/results.jsonl`. Rows are appended, never rewritten; a run whose key (method, config, seed, k,
model, data) is already in the file is skipped, so an interrupted comparison picks up where it
stopped, and its checkpoints under OUT/work are removed once its row is written.

Every row carries the data it was run on (`train_sha256` of the whole training file, `val_sha256`,
`test_sha256` of the rows scored) and its per-row outcome on the test rows (`per_row`,
engine/predictions.py), so that `tailor recommend` can tell methods apart with a paired bootstrap
from this file alone; what the runs of one test set share (row ids, gold labels, the majority
label) is written once, in the first row written on that test set (its `test_rows` key). Each
run's predictions, with per-label scores, go to `OUT/predictions/<run>.jsonl`.

A run may also measure what the report needs beyond the score: `train_score` (the metric on the
rows it was fitted on, not those it held out: the overfitting gap) beside `val_score` (on the rows
it held out, or the given validation set), `sensitivity` (compare/sensitivity.py) and
`load_seconds` (adapter folder to a bound model: the rollback time). Rows of methods that train
hold their training tokens, estimated FLOPs and optimizer bytes; a hybrid's, its per-variant test
scores, bytes and fit seconds, and what one LoRA per variant would weigh instead (compare/tune.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailorlm.compare.sensitivity import measure
from tailorlm.compare.tune import eval_costs, fit_seconds, train_costs, with_group_scores
from tailorlm.data.sample import k_per_class, split
from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter, dir_bytes
from tailorlm.engine.evaluate import LATENCY_QUERIES, evaluate, quick_score
from tailorlm.engine.predictions import per_row, test_rows, write_predictions
from tailorlm.methods import fit_memo
from tailorlm.methods.contract import check_backend, fitted_rows, held_out_rows, train_report
from tailorlm.methods.artifact import build_card, load_adapter, save_adapter
from tailorlm.methods.index import get_method
from tailorlm.methods.selection import validation_subset
from tailorlm.models.backend import Backend

RESULTS = "results.jsonl"
ERRORS = "errors.log"  # tracebacks of runs that failed; they are retried on the next call


@dataclass
class Run:
    method: str
    config: dict = field(default_factory=dict)
    seed: int = 0
    k: int | None = None  # examples per class from the training data; None = all
    role: str = "main"  # "main": the comparison at the plan's k; "curve": a data-efficiency point
    sensitivity: int = 0  # test rows to measure prompt sensitivity on; 0 = not measured
    train_score: bool = False  # also score the rows it was fitted on (the overfitting gap)
    # time LATENCY_QUERIES queries one at a time: a method's serving path, the same for every
    # seed, so a plan measures it on each method's first run (bakeoff.plan_runs)
    latency: bool = True
    estimate: float = 0.0  # seconds the budget expects it to take (compare/budget.py)
    required: bool = True  # False: the runner may skip it when the budget has no room left

    @property
    def slug(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:6]
        return f"{self.method}-k{self.k if self.k is not None else 'all'}-s{self.seed}-{digest}"


def run_key(run: Run, config: dict, model: Backend, train: Task, test: Task) -> str:
    blob = json.dumps([run.method, config, run.seed, run.k, model.identity, model.sha256,
                       train.fingerprint(), test.fingerprint()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_test_rows(out: str | Path) -> dict[str, dict]:
    """The `test_rows` records kept in OUT/results.jsonl, by test_sha256."""
    return {row["test_rows"]["test_sha256"]: row["test_rows"] for row in read_results(out)
            if row.get("test_rows")}


def read_results(out: str | Path) -> list[dict]:
    path = Path(out) / RESULTS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-append: not a finished run
                continue
    return rows


def append_result(out: str | Path, row: dict) -> None:
    path = Path(out) / RESULTS
    with open(path, "a", encoding="utf-8") as f:
        if f.tell() and not path.read_bytes().endswith(b"\n"):
            f.write("\n")  # close a line torn by an earlier crash
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_comparison(backend: Backend, train: Task, test: Task, runs: list[Run], out: str | Path,
                   *, metric: str | None = None, val: Task | None = None,
                   on_event=None, budget_seconds: float | None = None) -> list[dict]:
    """Fit and evaluate every run; returns this comparison's rows (old and new) in run order.

    With `budget_seconds`, a run that is not `required` is skipped when the time spent plus its
    estimate (scaled by how far earlier runs' estimates were off) would pass the budget; it is
    returned as {"skipped": True, "reason": ..., "run": slug} and not written, so a later call
    with more budget runs it. A run that raises is returned the same way ("failed: ...", the
    traceback in OUT/errors.log) and the comparison goes on.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {row.get("run_key"): row for row in read_results(out)}
    record = None if test.fingerprint() in read_test_rows(out) else test_rows(test, train)
    data = {"train_sha256": train.fingerprint(), "val_sha256": val.fingerprint() if val else None,
            "test_sha256": test.fingerprint()}
    rows = []
    clock = Clock(budget_seconds)
    for i, run in enumerate(runs):
        spec = get_method(run.method)
        config = spec.config.from_dict(run.config)
        key = run_key(run, config.to_dict(), backend, train, test)
        left = clock.left(runs[i:])
        if key in done:
            _emit(on_event, "skip", i, len(runs), run, done[key], left)
            rows.append(done[key])
            continue
        if not run.required and not clock.fits(run):
            reason = (f"over the budget: {clock.elapsed() / 60:.1f} of "
                      f"{budget_seconds / 60:.0f} min spent, about "
                      f"{clock.expected(run) / 60:.1f} min more needed")
            skipped = {"skipped": True, "reason": reason, "method": run.method,
                       "seed": run.seed, "k": run.k, "role": run.role, "run": run.slug}
            _emit(on_event, "budget", i, len(runs), run, skipped, left)
            rows.append(skipped)
            continue
        _emit(on_event, "start", i, len(runs), run, None, left)
        started = time.perf_counter()
        try:
            row = _run_one(backend, train, test, run, spec, config, out, metric, val)
        except Exception as e:  # one method's failure must not cost the rest of the comparison
            failed = {"skipped": True, "reason": f"failed: {type(e).__name__}: {e}",
                      "method": run.method, "seed": run.seed, "k": run.k, "role": run.role,
                      "run": run.slug}
            with open(out / ERRORS, "a", encoding="utf-8") as f:
                f.write(f"== {run.slug}\n{traceback.format_exc()}\n")
            clock.record(run, time.perf_counter() - started)
            _emit(on_event, "failed", i, len(runs), run, failed, clock.left(runs[i + 1:]))
            rows.append(failed)
            continue
        row.update(run_key=key, run_seconds=time.perf_counter() - started,
                   estimate_seconds=run.estimate, **data)
        if record is not None:  # once per test set: the first row written on it holds it
            row["test_rows"], record = record, None
        append_result(out, row)
        shutil.rmtree(out / "work" / run.slug, ignore_errors=True)  # checkpoints: run is done
        clock.record(run, time.perf_counter() - started)
        _emit(on_event, "done", i, len(runs), run, row, clock.left(runs[i + 1:]))
        rows.append(row)
    return rows


def _run_one(backend, train, test, run: Run, spec, config, out: Path, metric, val) -> dict:
    check_backend(spec, backend)  # a method that needs weights refuses an API-only model
    mark = backend.usage_mark()  # API calls, tokens and dollars from here are this run's
    shots = k_per_class(train, run.k, run.seed) if run.k else train
    # a fit this comparison already made (a hybrid's weight side, the same LoRA) is taken, not
    # made again; its seconds and memory are still this run's costs (methods/fit_memo.py)
    with CostMeter() as fit_cost:
        adapter, kept = fit_memo.fit(spec, backend, shots, val, config, seed=run.seed,
                                     metric=metric, work_dir=out / "work" / run.slug,
                                     resume=True)
    report = train_report(adapter)  # a hybrid whose weight side was taken says so
    reused_seconds = kept.seconds if kept else report.get("reused_seconds", 0.0)
    reused_peak = kept.peak_mb if kept else report.get("reused_peak_mb", 0.0)
    eval_mark = backend.usage_mark()
    result = evaluate(backend, adapter, test, metric=metric, seed=run.seed,
                      latency_queries=LATENCY_QUERIES if run.latency else 0)
    per_query = backend.query_cost(eval_mark, result.n_eval) if eval_mark is not None else {}
    adapter_dir = out / "adapters" / run.slug
    # the run's own memory: the peak of fit and evaluation minus the RSS before the fit
    own_peak = max(fit_cost.peak_rss_mb - fit_cost.start_rss_mb, reused_peak,
                   result.rss_before_mb + result.peak_rss_mb - fit_cost.start_rss_mb)
    costs = {"fit_seconds": fit_seconds(adapter, fit_cost.seconds + reused_seconds),
             "fit_reused": bool(reused_seconds), "peak_rss_mb": own_peak,
             "rss_before_mb": fit_cost.start_rss_mb, **eval_costs(result)}
    card = build_card(adapter, backend, shots, train=shots, val=val, test=test,
                      metrics={result.metric: result.score,
                               f"{result.metric}_ci": list(result.score_ci)},
                      costs={**costs, "trainable_params": adapter.trainable_params,
                             "total_params": backend.total_params,
                             **train_costs(adapter, backend)}, seed=run.seed, k=run.k)
    save_adapter(adapter, adapter_dir, card)
    # tokens, FLOPs and optimizer memory of methods that train; a hybrid's variants (scored
    # on the test set per variant) and its bytes against one LoRA per variant
    trained = with_group_scores(train_costs(adapter, backend), result)
    write_predictions(out / "predictions" / f"{run.slug}.jsonl", test, result)
    row = {
        "method": run.method, "family": spec.family, "side": spec.side,
        "model": backend.name, "task": test.name, "role": run.role,
        "metric": result.metric, "score": result.score, "score_ci": list(result.score_ci),
        "n_eval": result.n_eval, **costs,
        "trainable_params": adapter.trainable_params, "total_params": backend.total_params,
        "artifact_bytes": dir_bytes(adapter_dir),
        "seed": run.seed, "k": run.k, "n_train": len(shots),
        "config": config.to_dict(), "adapter": str(adapter_dir),
        "base_model": backend.identity, "base_model_sha256": backend.sha256,
        **trained, **per_query,
        "load_seconds": load_seconds(backend, adapter_dir),
        "zero_shot_reference": spec.zero_shot_reference,
        "break_even_reference": spec.break_even_reference,
        "predictions": str(Path("predictions") / f"{run.slug}.jsonl"),
        "per_row": per_row(test, result),
    }
    if run.train_score:
        row.update(fit_scores(backend, adapter, shots, val, result.metric, run.seed))
    if run.sensitivity:
        start = time.perf_counter()
        rows = evaluation_subset(test, run.sensitivity, seed=0)
        row["sensitivity"] = measure(backend, adapter, rows, result.metric, seed=run.seed)
        row["sensitivity_seconds"] = time.perf_counter() - start
    row.update(backend.describe(mark))  # where, dtype, device; a remote one's host, tier, usage
    return row


def fit_scores(backend: Backend, adapter, shots: Task, val: Task | None, metric: str,
               seed: int) -> dict:
    """The metric on the rows the adapter was fitted on (trained on or chosen from; not the rows
    it held out), and on its validation rows (those held out, or the given `val`); at most
    selection.judged_rows of each."""
    start = time.perf_counter()
    fitted = fitted_rows(adapter, shots)
    held = val if val is not None and len(val) else held_out_rows(adapter, shots)
    out = {"n_fitted": len(fitted), "n_held_out": len(shots) - len(fitted),
           "train_score": None, "val_score": None}
    if len(fitted):
        seen = validation_subset(fitted, seed)
        out.update(train_score=quick_score(backend, adapter, seen, metric),
                   n_train_scored=len(seen))
    if len(held):
        judged = validation_subset(held, seed)
        out.update(val_score=quick_score(backend, adapter, judged, metric),
                   n_val_scored=len(judged))
    out["train_score_seconds"] = time.perf_counter() - start
    return out


def evaluation_subset(task: Task, n: int | None, seed: int = 0) -> Task:
    """At most n rows, stratified by label (a test file sorted by label keeps every class)."""
    if n is None or n >= len(task):
        return task
    if task.kind == "classification":
        part = split(task, n, seed)[1]
        if n // 2 <= len(part) <= n:  # many labels, few rows: shares round to none, or to one
            return part
    idx = sorted(np.random.default_rng(seed).choice(len(task), n, replace=False))
    return task.with_examples([task.examples[i] for i in idx])


def load_seconds(backend: Backend, adapter_dir: Path) -> float:
    """Seconds from the adapter's folder to a model that answers with it: the time a rollback to
    this version takes."""
    start = time.perf_counter()
    bound = load_adapter(adapter_dir).bind(backend)  # a hybrid binds its weight side here
    if bound.virtual_prefix is not None:
        bound.virtual_prefix()
    return time.perf_counter() - start


class Clock:
    """Time spent, and the estimate of what is left, corrected by how earlier estimates did."""

    def __init__(self, budget: float | None):
        self.budget, self.start = budget, time.perf_counter()
        self.estimated = self.measured = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, run: Run, seconds: float) -> None:
        if run.estimate:
            self.estimated += run.estimate
            self.measured += seconds

    def expected(self, run: Run) -> float:
        ratio = self.measured / self.estimated if self.estimated else 1.0
        return run.estimate * ratio

    def fits(self, run: Run) -> bool:
        return self.budget is None or self.elapsed() + self.expected(run) <= self.budget

    def left(self, runs: list[Run]) -> float | None:
        if not any(r.estimate for r in runs):
            return None
        return sum(self.expected(r) for r in runs)


def _emit(on_event, kind, i, n, run, row, seconds_left) -> None:
    if on_event is not None:
        on_event(kind, i, n, run, row, seconds_left)
