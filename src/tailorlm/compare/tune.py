"""One method, one fit, kept: what `tailor tune` and `tailor eval` call, and the runner shares.

    tune(backend, "lora", train, "adapters/a", val=val)      fit, measure, evaluate on val, save
        -> adapters/a/   adapter.json  card.json  (+ the method's files)  .work/ (checkpoints)
    adapter, backend, card = load_tuned("adapters/a")        the adapter and its own base model
    evaluate(backend, adapter, test) ; eval_report(...)

The card (methods/artifact.py `build_card`, the same one `tailor compare` writes) records what the
adapter was made from and what it cost: the base model (the name the user gave, its hub identity,
the hash and variant of its weights), the task's labels and words (so a test file is read with the
same label set), the data hashes, validation metrics, and the fit's costs:

    fit_seconds     the whole fit, across resumes: this call's wall time, or the training loop's
                    total over every run of it (checkpoints carry it), whichever is larger; a
                    resume after a finished fit keeps the card's earlier figure
    peak_rss_mb     the fit's own memory: its peak RSS minus rss_before_mb, the RSS it started at
    train_flops     4·N·T + 6·N_tr·T for a frozen base, 6·N·T for full fine-tuning (engine/cost.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tailorlm.data.task import Task
from tailorlm.engine.cost import CostMeter, dir_bytes, train_flops
from tailorlm.engine.evaluate import Evaluation, evaluate
from tailorlm.errors import TailorError
from tailorlm.methods.artifact import (CARD_FILE, build_card, card_base_model, load_adapter,
                                       load_card, save_adapter, update_card)
from tailorlm.methods.contract import check_backend, train_report
from tailorlm.methods.index import get_method
from tailorlm.models.backend import Backend

WORK = ".work"  # training checkpoints inside the adapter folder: what --resume continues from
# Keys an adapter's `train_result` may hold that a result row and a card show as they are:
# a hybrid's per-variant report and its byte comparison against one LoRA per variant.
PART_KEYS = ("variants", "n_variants", "total_bytes", "add_variant_seconds",
             "add_variant_bytes", "one_lora_per_variant_bytes")


@dataclass
class Tuned:
    adapter: object
    card: dict
    directory: Path
    validation: Evaluation | None

    @property
    def artifact_bytes(self) -> int:
        return dir_bytes(self.directory) - dir_bytes(self.directory / WORK)


def train_costs(adapter, backend: Backend) -> dict:
    """What a fitted adapter reports of its training (contract.train_report): tokens seen,
    estimated FLOPs, optimizer memory, and the parts of an adapter made of parts."""
    report = train_report(adapter)
    out = {}
    if report.get("tokens_seen"):
        out["train_tokens"] = int(report["tokens_seen"])
        out["train_flops"] = train_flops(backend.total_params, out["train_tokens"],
                                         adapter.trainable_params)
    if report.get("optimizer_bytes"):
        out["optimizer_bytes"] = int(report["optimizer_bytes"])
    out.update({k: report[k] for k in PART_KEYS if k in report})
    out.update({k: report[k] for k in ("template", "fit") if k in report})  # how it was fitted
    return out


def fit_seconds(adapter, wall: float) -> float:
    """The whole fit's seconds across resumes: `wall` (this call) or the training loop's total
    over every run of it, which its checkpoints carry (`train_seconds`), whichever is larger.
    Setup outside the loop in runs that were killed is not counted."""
    report = train_report(adapter)
    return max(float(wall), float(report.get("train_seconds") or 0.0))


def eval_costs(result: Evaluation) -> dict:
    """What an evaluation measured, as card and result-row fields (docs/report-schema.md)."""
    return {"eval_seconds": result.seconds, "queries_per_second": result.queries_per_second,
            "eval_batch_size": result.batch_size,
            "latency_ms_p50": result.latency_ms_p50, "latency_ms_p95": result.latency_ms_p95,
            "latency_queries": result.latency_queries,
            "latency_ms_per_query": result.latency_ms_per_query,
            "prompt_tokens_per_query": result.prompt_tokens_per_query,
            "generated_tokens_per_query": result.generated_tokens_per_query,
            "eval_tokens": result.tokens, "eval_flops": result.eval_flops}


def with_group_scores(costs: dict, evaluation: Evaluation) -> dict:
    """`costs` with each evaluated group's score and size merged into its `variants` entry."""
    groups = evaluation.extra.get("groups")
    if not groups or "variants" not in costs:
        return costs
    variants = {name: dict(part) for name, part in costs["variants"].items()}
    for name, scored in groups.items():
        variants.setdefault(name, {}).update(scored)
    return {**costs, "variants": variants}


def tune(backend: Backend, method: str, train: Task, out, *, val: Task | None = None,
         config: dict | None = None, seed: int = 0, resume: bool = False,
         model: str | None = None, metric: str | None = None) -> Tuned:
    """Fit `method` on `train`, evaluate it on `val` if given, and save it with its card to `out`.

    Checkpoints go to `out/.work`, kept across saves, so `resume=True` continues a killed fit (or,
    after a finished one, trains nothing and writes the adapter again, its card's costs kept).
    """
    out = Path(out)
    spec = get_method(method)
    check_backend(spec, backend)  # a method that needs weights refuses an API-only model
    cfg = spec.config.from_dict(config)
    with CostMeter() as meter:
        adapter = spec.fit(backend, train, val, cfg, seed=seed, work_dir=out / WORK,
                           resume=resume, metric=metric)
    validation = None
    if val is not None and len(val):
        validation = evaluate(backend, adapter, val, metric=metric, seed=seed)
    costs = {"fit_seconds": fit_seconds(adapter, meter.seconds),
             "peak_rss_mb": meter.peak_delta_mb, "rss_before_mb": meter.start_rss_mb,
             "trainable_params": adapter.trainable_params, "total_params": backend.total_params,
             **train_costs(adapter, backend)}
    metrics = {}
    if validation is not None:
        metrics = {validation.metric: validation.score,
                   f"{validation.metric}_ci": list(validation.score_ci)}
        costs.update(eval_costs(validation))
    card = build_card(adapter, backend, train, train=train, val=val, metrics=metrics,
                      costs=costs, seed=seed, model=model)
    if resume:
        _keep_earlier_costs(out, card)
    save_adapter(adapter, out, card, keep=(WORK,))
    parts = {k: v for k, v in train_costs(adapter, backend).items() if k in PART_KEYS}
    if parts:  # saving measured an adapter's parts (a hybrid's bytes per variant)
        update_card(out, {"costs": {**card["costs"], **parts}})
    return Tuned(adapter, load_card(out), out, validation)


def _keep_earlier_costs(out: Path, card: dict) -> None:
    """A resumed fit measures only its own part: where `out` already holds the card of the same
    recipe on the same data (a finished fit written again), its fit time and memory stay."""
    if not (out / CARD_FILE).is_file():
        return
    try:
        earlier = load_card(out)
    except (OSError, ValueError):
        return
    if earlier.get("recipe") != card["recipe"] or earlier.get("data") != card["data"]:
        return
    for key in ("fit_seconds", "peak_rss_mb"):
        before = (earlier.get("costs") or {}).get(key)
        if before is not None and before > card["costs"].get(key, 0):
            card["costs"][key] = before


def load_tuned(directory, *, model: str | None = None, dtype: str | None = None):
    """(adapter, backend, card): a saved adapter and the base model its card names (or `model`).

    The base's weights must hash as they did when the adapter was made.
    """
    from tailorlm.models.load import load_backend

    adapter = load_adapter(directory)
    card = load_card(directory)
    base = card_base_model(card)
    name = model or base["name"] or base["source"]
    if not name:
        raise TailorError(f"{directory}/card.json names no base model; pass --model")
    backend = load_backend(name, dtype=dtype or base["dtype"] or "float32")
    if base["sha256"] not in (None, backend.sha256):
        raise TailorError(f"{directory} was made on {base['identity']} with weights sha256 "
                          f"{base['sha256'][:12]}..., but {name} has "
                          f"{backend.sha256[:12]}...: use the adapter's own base model (--model)")
    return adapter, backend, card


def eval_report(adapter, backend: Backend, result: Evaluation, directory) -> dict:
    """What `tailor eval` prints: quality, per-query cost, and the adapter's size and parts."""
    report = {"metric": result.metric, "score": result.score, "score_ci": list(result.score_ci),
              "n_eval": result.n_eval, **eval_costs(result),
              "method": adapter.method, "adapter": str(directory),
              "artifact_bytes": dir_bytes(directory) - dir_bytes(Path(directory) / WORK),
              "trainable_params": adapter.trainable_params}
    parts = {k: v for k, v in train_costs(adapter, backend).items() if k in PART_KEYS}
    report.update(with_group_scores(parts, result))
    return report
