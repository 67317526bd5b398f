"""Fit a comparison to its time budget: resolve a plan's `auto` values, and estimate each run.

The estimate starts from a probe on the user's own data and machine: the default zero-shot
prompt on PROBE_ROWS test rows, timed (seconds per query, tokens per second; for generation the
tokens per second of a forward over training rows, since decoding's say nothing of training).
Every other cost is a multiple of it:

    eval(n)         n * s_query
    choose prompts  choice_passes * judged * s_query                     (prompt family)
    train           trials * (n_fit * e_trial * row_tokens * TRAIN_COST / tok_s
                              + evaluations * judged validation rows * s_query)
                    + refit: n * e * row_tokens * TRAIN_COST / tok_s
    sensitivity     variants * rows * s_query
    train score     judged * s_query

A learning method's fit is methods/trainable.py's protocol: `trials` runs (one per lr tried) on
n_fit = 3/4 of the n rows, each stopping `patience` evaluations after its best, then a refit on all
n rows for the chosen epochs. The estimate expects the best at e = expected_epochs(n) (about
EXAMPLE_PASSES rows seen), so a trial runs e_trial = e + the patience's epochs (at most the cap,
epochs_for(n)), and the refit runs e. With one lr the fit costs about (e_trial * 0.75 + e) / e
times one plain run of e epochs: about 2.2x on 32 rows; the lr choice (LR_FACTORS, three trials)
adds two more trials, about 3.8x in all, so the plan asks for it only where the budget allows.

`judged` is the rows a choice, an early-stopping check or the train score reads
(methods/selection.judged_rows: at most 200, 50 on a task with 20 labels or more).

TRAIN_COST is each method's `MethodSpec.train_cost`: the forward+backward (+ optimizer) cost of
a trained token relative to an evaluated one, fitted to this project's sst2 and trec runs on
CPU: soft prompts 3, LoRA 4.5, full fine-tuning 8 (AdamW over every weight, and checkpoints of
all of them). A hybrid costs its two sides. The runner corrects the estimate with each finished
run's measured/estimated ratio.

Sizing the default plan (`auto`), in this order:
    k       the largest of 16, 8, 4, 2, 1 per class with k * classes <= 128 (generation: 64,
            32, 16 rows) that fits
    epochs  the cap of early stopping: twice the expected epochs, at least MIN_CAP, at most
            MAX_CAP (30 for a dozen rows, 16 for 32 rows, 10 from 80 rows); where the whole
            plan does not fit and a cap of half the expected length buys a larger k (or the
            whole plan), that is the cap (`lean_epochs`)
    lr      (`train.lr_search: auto`) three values, LR_FACTORS x each method's default, where the
            whole plan fits with them at the preferred k; else the default alone
    curve   k/4, k, 4k where the data has them (4k * classes <= 512); 4k is dropped first,
            then k is halved, then the curve goes (seeds come before the curve)
    n_test  as many test rows as fit the budget, at least MIN_TEST
    sensitivity rows: min(200, n_test), at most SENSITIVITY_SHARE of the budget
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from tailorlm.data.task import Task
from tailorlm.methods.selection import judged_rows
from tailorlm.methods.tuned import LR_FACTORS, MAX_EVALUATIONS, VAL_FRACTION, TrainFields

PROBE_ROWS = 24
# passes over the judged rows to choose a prompt, beyond one per built-in template of the task's
# kind (7 for classification, 2 for generation): few_shot's 4 demonstration sets with longer
# prompts, and calibration. Fitted to the sst2, trec and e2e runs.
CHOICE_EXTRA_PASSES = 5
EXAMPLE_PASSES = 240
MAX_EPOCHS = 20  # of the expected training length
MIN_CAP, MAX_CAP = 10, 30  # the cap early stopping trains up to
PATIENCE = TrainFields.patience  # evaluations past the best before a trial stops
MIN_TEST = 300
MIN_PART_TEST = 50  # test rows when even one run per method does not fit in the budget
SENSITIVITY_SHARE = 0.2  # of the budget, at most, for the wording-sensitivity probe
MIN_SENSITIVITY = 20
LR_NOTE = (f"one learning rate per method (each method's default): trying {len(LR_FACTORS)} "
           "would not fit the budget")
SAFETY = 0.85  # share of the budget the estimate may fill: estimates run a little short


@dataclass
class Probe:
    s_query: float  # seconds per test query, zero-shot
    tok_s: float  # tokens the model processes per second in evaluation
    row_tokens: float  # mean tokens of a training row (prompt + target)
    n_labels: int
    choice_passes: int = 7 + CHOICE_EXTRA_PASSES  # passes over the judged rows to choose a prompt


def probe(backend, train: Task, test: Task) -> Probe:
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.methods.prompt_adapter import PromptAdapter
    from tailorlm.methods.templates import builtin_templates, resolve

    template = resolve("default", train)
    adapter = PromptAdapter("prompt_template", None, train.with_examples([]), template)
    rows = test.with_examples(test.examples[:PROBE_ROWS])
    if test.kind == "generation":  # the worst case: every answer runs to the token limit
        from tailorlm.engine.generate import generate

        prompts = [adapter.prompt(e) for e in rows.examples]
        generate(backend, prompts[:2], stop=())  # warm up
        start = time.perf_counter()
        generate(backend, prompts, stop=())
        seconds = max(time.perf_counter() - start, 1e-3)
    else:
        evaluate(backend, adapter, rows.with_examples(rows.examples[:2]),
                 latency_queries=0)  # warm up; throughput only, no one-at-a-time latency
        start = time.perf_counter()
        n_tokens = evaluate(backend, adapter, rows, latency_queries=0).tokens
        seconds = max(time.perf_counter() - start, 1e-3)
    texts = [template.render_query(train, e.input) + " " + e.target for e in train.examples[:64]]
    row_tokens = sum(len(backend.encode(t)) for t in texts) / max(len(texts), 1)
    # Decoding runs one token per row per step: its tokens/s says nothing of training, which
    # runs whole rows at once; time a forward over training rows instead.
    tok_s = n_tokens / seconds if test.kind != "generation" else _forward_rate(backend, texts[:16])
    return Probe(s_query=seconds / len(rows), tok_s=tok_s, row_tokens=row_tokens,
                 n_labels=len(train.labels or []),
                 choice_passes=len(builtin_templates(train)) + CHOICE_EXTRA_PASSES)


def remote_probe(backend, train: Task, test: Task) -> Probe:
    """The probe of a model behind an API: seconds per zero-shot query from real calls (cached:
    a rerun costs nothing and measures near 0). Nothing trains there, so the training rate
    is the evaluation rate."""
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.methods.prompt_adapter import PromptAdapter
    from tailorlm.methods.templates import builtin_templates, resolve

    template = resolve("default", train)
    adapter = PromptAdapter("prompt_template", None, train.with_examples([]), template)
    rows = test.with_examples(test.examples[:PROBE_ROWS])
    start = time.perf_counter()
    tokens = evaluate(backend, adapter, rows).tokens
    seconds = max(time.perf_counter() - start, 1e-3)
    texts = [template.render_query(train, e.input) + " " + e.target for e in train.examples[:64]]
    row_tokens = sum(backend.count_tokens(t) for t in texts) / max(len(texts), 1)
    return Probe(s_query=seconds / len(rows), tok_s=max(tokens, 1) / seconds,
                 row_tokens=row_tokens, n_labels=len(train.labels or []),
                 choice_passes=len(builtin_templates(train)) + CHOICE_EXTRA_PASSES)


def _forward_rate(backend, texts: list[str]) -> float:
    """Tokens per second of one no-grad forward over `texts` as a padded batch."""
    import torch

    ids = [backend.encode(t) for t in texts]
    x = torch.full((len(ids), max(map(len, ids))), backend.tokenizer.pad_token_id or 0)
    mask = torch.zeros_like(x)
    for i, row in enumerate(ids):
        x[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    x, mask = x.to(backend.device), mask.to(backend.device)
    with torch.inference_mode():
        backend.model(input_ids=x[:2], attention_mask=mask[:2])  # warm up
        start = time.perf_counter()
        backend.model(input_ids=x, attention_mask=mask)
    return int(mask.sum()) / max(time.perf_counter() - start, 1e-3)


def expected_epochs(n_fit: int, passes: int = EXAMPLE_PASSES) -> int:
    """Where early stopping is expected to land: about `passes` rows seen in all (12 rows:
    20 epochs, 30 steps at batch 8; from 120 rows, 2)."""
    return max(2, min(MAX_EPOCHS, round(passes / max(n_fit, 1))))


def epochs_for(n_fit: int, lean: bool = False) -> int:
    """The epoch cap a plan gives a learning method: room for early stopping to train past the
    expected length while validation still improves (the Trainer default users run is 10);
    `lean` (a tight budget): half the expected length (about EXAMPLE_PASSES / 2 rows seen; on
    sst2 at K=16, lora's validation peaked at epoch 5 of 24 rows: 120 rows seen)."""
    if lean:
        return expected_epochs(n_fit, EXAMPLE_PASSES // 2)
    return max(MIN_CAP, min(MAX_CAP, 2 * expected_epochs(n_fit)))


def n_shots(task: Task, k: int) -> int:
    """Rows a k-per-class sample holds (fewer where a class is short)."""
    if task.kind != "classification":
        return min(k, len(task))
    counts: dict[str, int] = {}
    for e in task.examples:
        counts[e.label] = counts.get(e.label, 0) + 1
    return sum(min(k, c) for c in counts.values())


def method_costs(name: str) -> dict:
    """What the estimate needs of a method: its family and the train_cost of each side."""
    from tailorlm.methods import get_method

    spec = get_method(name)
    if spec.family == "hybrid":
        sides = (spec.config.weight_spec.train_cost, spec.config.input_spec.train_cost)
    else:
        sides = (spec.train_cost,)
    return {"family": spec.family, "sides": sides}


def estimate_fit(p: Probe, sides: tuple[float, ...], n: int, epochs: int,
                 trials: int = 1) -> float:
    """Seconds to fit one method on n rows (a hybrid: both sides); `epochs` is the cap, `trials`
    the learning rates tried (see the module doc)."""
    total = 0.0
    for cost in sides:
        if not cost:  # nothing trained: prompts are chosen by scoring candidates
            total += p.choice_passes * judged_rows(n, p.n_labels) * p.s_query
            continue
        n_fit = math.ceil((1 - VAL_FRACTION) * n)
        n_val = judged_rows(math.floor(VAL_FRACTION * n), p.n_labels)
        e = min(epochs, expected_epochs(n_fit))
        every = max(1.0, epochs / MAX_EVALUATIONS)  # epochs between evaluations
        e_trial = min(epochs, e + PATIENCE * every)
        evaluations = min(MAX_EVALUATIONS, math.ceil(e_trial / every))
        trial = n_fit * e_trial * p.row_tokens * cost / p.tok_s + evaluations * n_val * p.s_query
        total += trials * trial + n * e * p.row_tokens * cost / p.tok_s
    return total


def variant_count(info: dict) -> int:
    """Sensitivity variants: as fitted, each paraphrase, and demonstration orders (prompts)."""
    return 1 + 6 + (3 if info["family"] == "prompt" else 0)


def run_seconds(p: Probe, info: dict, n: int, epochs: int, n_test: int, sens_rows: int,
                train_score: bool) -> float:
    """Estimated seconds of one run: fit, evaluation, sensitivity, and the train-score pass.
    `info["trials"]`: the learning rates each learning side tries (1 unless the plan asks)."""
    return (estimate_fit(p, info["sides"], n, epochs, info.get("trials", 1))
            + (n_test + sens_rows * variant_count(info)) * p.s_query
            + (judged_rows(n, p.n_labels) * p.s_query if train_score else 0.0))


def size_plan(plan, train: Task, test: Task, p: Probe, method_info: dict[str, dict]) -> dict:
    """The plan's `auto` values resolved against the data and the probe: {"k", "curve",
    "max_test", "sensitivity", "lr_search", "lr_factors", "estimate_seconds", "notes"}.

    `train.lr_search: auto` keeps three learning rates per learning side where they cost nothing
    else the plan holds: the whole plan fits with them at the same k and curve as without, on
    at least min(MIN_TEST, the rows it would have had) test rows; otherwise each method's
    default lr alone (and a note says so).
    """
    choice = plan.tree["train"].get("lr_search", "auto")
    if choice in (True, False):
        return _size(plan, train, test, p, method_info, choice)
    plain = _size(plan, train, test, p, method_info, False)
    if not any(any(info["sides"]) for info in method_info.values()):
        return plain  # nothing learns: nothing to choose
    if not plain["whole"] and plan.tree["train"]["epochs"] == "auto":
        lean = _size(plan, train, test, p, method_info, False, lean=True)
        if lean["whole"] or lean["k"] > plain["k"]:
            lean["notes"] += ["epochs capped at about half the expected length (epochs_for(n, "
                              "lean=True)) to fit the budget", LR_NOTE]
            return lean
    searched = _size(plan, train, test, p, method_info, True)
    if searched["whole"] and (searched["k"], searched["curve"]) == (plain["k"], plain["curve"]) \
            and searched["max_test"] >= min(MIN_TEST, plain["max_test"]):
        return searched
    plain["notes"].append(LR_NOTE)
    return plain


def _size(plan, train: Task, test: Task, p: Probe, method_info: dict[str, dict],
          lr_search: bool, lean: bool = False) -> dict:
    """size_plan at a given lr choice.

    Tries the preferred sizes first and gives up, in this order, until the whole plan fits with
    at least MIN_TEST test rows: the curve's largest point, then halving k (not below 4), then
    the curve. If nothing fits whole, the largest k whose seeds (every method at every seed, at
    k) fit with at least MIN_PART_TEST test rows; then the largest k whose required runs (every
    method once, at seed 0) fit. What is over is left to the runner, which skips the runs that
    do not fit in the time left. Seeds come before the curve and before test rows beyond
    MIN_PART_TEST: a score without its spread over seeds cannot be compared.
    """
    t = plan.tree
    trials = len(LR_FACTORS) if lr_search else 1
    method_info = {m: {**info, "trials": trials, "lean": lean} for m, info in method_info.items()}
    budget = t["budget_minutes"] * 60 * SAFETY
    n_classes = len(train.labels) if train.kind == "classification" else 1
    ks = [t["train"]["k"]] if t["train"]["k"] != "auto" else (
        [c for c in (16, 8, 4, 2, 1) if c * n_classes <= 128] or [1]
        if train.kind == "classification" else [64, 32, 16])
    sens = _sensitivity_rows(t, p, method_info, budget, len(test))
    cut_sens = min(sens, MIN_SENSITIVITY) if t["eval"]["sensitivity"] == "auto" else sens
    options = [(k, c) for k in ks for c in _curves(t["train"]["curve"], train, k, n_classes)]
    options += [(k, [k]) for k in ks if t["train"]["curve"] == "auto"]  # no curve: last resort
    tried = []
    for k, curve in options:
        fixed, per_row = _totals(plan, p, method_info, train, k, curve, sens)
        max_test = t["eval"]["max_test"]
        if max_test == "auto":
            room = int((budget - fixed) / per_row) if per_row else len(test)
            max_test = max(min(len(test), MIN_TEST), min(len(test), room))
        else:
            max_test = len(test) if max_test is None else min(max_test, len(test))
        # the seeds at k without the curve, and (what must run whatever the budget) every
        # method once at k: their test rows shrink (not below MIN_PART_TEST) until they fit;
        # the wording probe shrinks to MIN_SENSITIVITY rows
        tiers = {}
        for tier, seeds in (("seeds", None), ("required", 1)):
            t_fixed, t_row = _totals(plan, p, method_info, train, k, [k], cut_sens, seeds=seeds)
            n_rows = max_test if t["eval"]["max_test"] != "auto" else max(
                min(len(test), MIN_PART_TEST), min(max_test, int((budget - t_fixed) / t_row)))
            tiers[tier] = (n_rows, t_fixed + t_row * n_rows)
        tried.append({"k": k, "curve": curve, "max_test": max_test,
                      "sensitivity": min(sens, max_test),
                      "estimate_seconds": fixed + per_row * max_test, "tiers": tiers,
                      "per_row": per_row})
    # a whole plan at a tiny k teaches less than most of a plan at a useful one
    whole = [c for c in tried if c["estimate_seconds"] <= budget and c["k"] >= min(4, ks[0])]
    cut = {tier: [{**c, "max_test": c["tiers"][tier][0],
                   "sensitivity": min(cut_sens, c["tiers"][tier][0]),
                   "estimate_seconds": c["estimate_seconds"] - c["per_row"] * (
                       c["max_test"] - c["tiers"][tier][0]),
                   "required": c["tiers"][tier][1]} for c in tried]
           for tier in ("seeds", "required")}
    seeded = [c for c in cut["seeds"] if c["required"] <= budget]
    fits = [c for c in cut["required"] if c["required"] <= budget]
    # nothing fits: the cheapest required runs, which the runner runs whatever the budget
    chosen = (whole or seeded or fits or [min(cut["required"], key=lambda c: c["required"])])[0]
    notes = []
    unit = "per class" if train.kind == "classification" else "examples"
    if chosen["k"] != ks[0]:
        notes.append(f"k={chosen['k']} {unit} (not {ks[0]}) to fit the budget")
    if not whole and not seeded and not fits:
        notes.append(f"even one run per method needs about {chosen['required'] / 60:.0f} min: "
                     "they run anyway; nothing else does")
    elif not whole and not seeded:
        notes.append(f"the whole plan needs about {chosen['estimate_seconds'] / 60:.0f} min, over "
                     f"the {t['budget_minutes']:g} min budget: the runner skips the extra seeds "
                     "and curve points that do not fit")
    elif not whole:
        notes.append(f"the whole plan needs about {chosen['estimate_seconds'] / 60:.0f} min, over "
                     f"the {t['budget_minutes']:g} min budget: every seed at k fits on "
                     f"{chosen['max_test']} test rows; the runner skips the curve points that do "
                     "not fit")
    return {**{k: v for k, v in chosen.items() if k not in ("required", "tiers", "per_row")},
            "lr_search": lr_search, "lr_factors": list(LR_FACTORS) if lr_search else [1.0],
            "lean_epochs": lean, "notes": notes, "whole": bool(whole)}


def _curves(spec, train: Task, k: int, n_classes: int) -> list[list[int]]:
    """The curve to try first, then the same without its largest point (auto only)."""
    if spec != "auto":
        return [sorted(set(spec))]
    cap = 512 if train.kind == "classification" else 256
    # a point above k only if the data has more rows for it than for k
    curve = sorted({c for c in (k // 4, k, 4 * k) if c >= 1 and c * n_classes <= cap
                    and (c <= k or n_shots(train, c) > n_shots(train, k))})
    return [curve, curve[:-1]] if len(curve) > 1 and curve[-1] > k else [curve]


def _sensitivity_rows(t: dict, p: Probe, method_info: dict, budget: float, n_test: int) -> int:
    """eval.sensitivity, or (auto) min(200, test rows) bounded to SENSITIVITY_SHARE of the
    budget, at least MIN_SENSITIVITY."""
    sens = t["eval"]["sensitivity"]
    if sens != "auto":
        return sens or 0
    variants = sum(variant_count(info) for info in method_info.values())
    share = int(SENSITIVITY_SHARE * budget / max(variants * p.s_query, 1e-9))
    return max(min(MIN_SENSITIVITY, n_test), min(200, n_test, share))


def _totals(plan, p: Probe, method_info: dict, train: Task, k: int, curve: list[int],
            sens_rows: int, seeds: int | None = None) -> tuple[float, float]:
    """(seconds that do not depend on the test size, seconds per test row) of the whole plan:
    every seed at k (sensitivity on the first), one seed at each other curve point."""
    t = plan.tree
    fixed = per_row = 0.0
    points = [(k, seeds or len(plan.seeds))] + [(c, 1) for c in curve if c != k]
    for info in method_info.values():
        for kk, runs in points:
            n = n_shots(train, kk)
            epochs = t["train"]["epochs"] if t["train"]["epochs"] != "auto" else \
                epochs_for(n, info.get("lean", False))
            plain = run_seconds(p, info, n, epochs, 0, 0, t["eval"]["train_score"])
            fixed += runs * plain + (sens_rows * variant_count(info) * p.s_query
                                     if kk == k else 0.0)
            per_row += runs * p.s_query
    return fixed, per_row
