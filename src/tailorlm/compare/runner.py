"""Run methods side by side on one task and append one result row per run.

For each run (method, config, seed, k): sample k examples per class from the training data
(seeded), fit, save the adapter, evaluate on the test set, and append a row to
`OUT/results.jsonl`. Rows are appended, never rewritten; a run whose key (method, config, seed, k,
model, data) is already in the file is skipped, so an interrupted comparison picks up where it
stopped, and its checkpoints under OUT/work are removed once its row is written.

A run may also measure what the report needs beyond the score: `train_score` (the metric on the
rows it was fitted on: the overfitting gap), `sensitivity` (compare/sensitivity.py) and
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
from tailorlm.compare.tune import train_costs, with_group_scores
from tailorlm.data.sample import k_per_class, split
from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter, dir_bytes
from tailorlm.engine.evaluate import evaluate, quick_score
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.contract import check_backend
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
                   estimate_seconds=run.estimate)
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
    with CostMeter() as fit_cost:
        adapter = spec.fit(backend, shots, val, config, seed=run.seed,
                           work_dir=out / "work" / run.slug, resume=True)
    eval_mark = backend.usage_mark()
    result = evaluate(backend, adapter, test, metric=metric, seed=run.seed)
    per_query = backend.query_cost(eval_mark, result.n_eval) if eval_mark is not None else {}
    adapter_dir = out / "adapters" / run.slug
    card = {"base_model": backend.identity, "base_model_sha256": backend.sha256,
            "base_model_source": backend.path, "train_sha256": shots.fingerprint(),
            "metrics": {result.metric: result.score}, "costs": {
                "fit_seconds": fit_cost.seconds, "eval_seconds": result.seconds}}
    save_adapter(adapter, adapter_dir, card)
    # tokens, FLOPs and optimizer memory of methods that train; a hybrid's variants (scored
    # on the test set per variant) and its bytes against one LoRA per variant
    trained = with_group_scores(train_costs(adapter, backend), result)
    row = {
        "method": run.method, "family": spec.family, "side": spec.side,
        "model": backend.name, "task": test.name, "role": run.role,
        "metric": result.metric, "score": result.score, "score_ci": list(result.score_ci),
        "n_eval": result.n_eval, "fit_seconds": fit_cost.seconds,
        "eval_seconds": result.seconds,
        "peak_rss_mb": max(fit_cost.peak_rss_mb, result.peak_rss_mb),
        "trainable_params": adapter.trainable_params, "total_params": backend.total_params,
        "artifact_bytes": dir_bytes(adapter_dir),
        "prompt_tokens_per_query": result.prompt_tokens_per_query,
        "latency_ms_per_query": result.latency_ms_per_query,
        "eval_tokens": result.tokens, "seed": run.seed, "k": run.k, "n_train": len(shots),
        "config": config.to_dict(), "adapter": str(adapter_dir),
        "base_model": backend.identity, "base_model_sha256": backend.sha256,
        **trained, **per_query,
        "load_seconds": load_seconds(backend, adapter_dir),
    }
    if run.train_score:  # the rows it was fitted on (chosen from or trained on), at most 200
        start = time.perf_counter()
        seen = validation_subset(shots, run.seed)
        row["train_score"] = quick_score(backend, adapter, seen, result.metric)
        row["train_score_seconds"] = time.perf_counter() - start
    if run.sensitivity:
        start = time.perf_counter()
        rows = evaluation_subset(test, run.sensitivity, seed=0)
        row["sensitivity"] = measure(backend, adapter, rows, result.metric, seed=run.seed)
        row["sensitivity_seconds"] = time.perf_counter() - start
    row.update(backend.describe(mark))  # where, dtype, device; a remote one's host, tier, usage
    return row


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
