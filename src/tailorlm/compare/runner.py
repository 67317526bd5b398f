"""Run methods side by side on one task and append one result row per run.

For each method: sample k examples per class from the training data (seeded), fit, save the adapter,
evaluate on the test set, and append a row to `OUT/results.jsonl`. Rows are appended, never
rewritten; a run whose key (method, config, seed, k, model, data) is already in the file is skipped,
so an interrupted comparison picks up where it stopped.

Rows of methods that train also hold their training tokens, estimated FLOPs and optimizer bytes; a
hybrid's, its per-variant test scores, bytes and fit seconds, and what one LoRA per variant would
weigh instead (compare/tune.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tailorlm.compare.tune import train_costs, with_group_scores
from tailorlm.data.sample import k_per_class
from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter, dir_bytes
from tailorlm.engine.evaluate import evaluate
from tailorlm.methods.artifact import save_adapter
from tailorlm.methods.registry import get_method
from tailorlm.models.backend import Backend

RESULTS = "results.jsonl"


@dataclass
class Run:
    method: str
    config: dict = field(default_factory=dict)
    seed: int = 0
    k: int | None = None  # examples per class from the training data; None = all

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
                   on_event=None) -> list[dict]:
    """Fit and evaluate every run; returns this comparison's rows (old and new) in run order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {row.get("run_key"): row for row in read_results(out)}
    rows = []
    for i, run in enumerate(runs):
        spec = get_method(run.method)
        config = spec.config.from_dict(run.config)
        key = run_key(run, config.to_dict(), backend, train, test)
        if key in done:
            _emit(on_event, "skip", i, len(runs), run, done[key])
            rows.append(done[key])
            continue
        _emit(on_event, "start", i, len(runs), run, None)
        shots = k_per_class(train, run.k, run.seed) if run.k else train
        with CostMeter() as fit_cost:
            adapter = spec.fit(backend, shots, val, config, seed=run.seed,
                               work_dir=out / "work" / run.slug, resume=True)
        result = evaluate(backend, adapter, test, metric=metric, seed=run.seed)
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
            "method": run.method, "model": backend.name, "task": test.name,
            "metric": result.metric, "score": result.score, "score_ci": list(result.score_ci),
            "n_eval": result.n_eval, "fit_seconds": fit_cost.seconds,
            "eval_seconds": result.seconds,
            "peak_rss_mb": max(fit_cost.peak_rss_mb, result.peak_rss_mb),
            "trainable_params": adapter.trainable_params, "total_params": backend.total_params,
            "artifact_bytes": dir_bytes(adapter_dir),
            "prompt_tokens_per_query": result.prompt_tokens_per_query,
            "latency_ms_per_query": result.latency_ms_per_query,
            "eval_tokens": result.tokens, "seed": run.seed, "k": run.k, "n_train": len(shots),
            "config": config.to_dict(), "adapter": str(adapter_dir), "run_key": key,
            "base_model": backend.identity, "base_model_sha256": backend.sha256,
            "dtype": str(backend.dtype).removeprefix("torch."), **trained,
        }
        append_result(out, row)
        _emit(on_event, "done", i, len(runs), run, row)
        rows.append(row)
    return rows


def _emit(on_event, kind, i, n, run, row) -> None:
    if on_event is not None:
        on_event(kind, i, n, run, row)
