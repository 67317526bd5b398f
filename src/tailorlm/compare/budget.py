"""Fit a comparison to its time budget: resolve a plan's `auto` values, and estimate each run.

The estimate starts from a probe on the user's own data and machine: the default zero-shot
prompt on PROBE_ROWS test rows, timed (seconds per query, tokens per second; for generation the
tokens per second of a forward over training rows, since decoding's say nothing of training).
Every other cost is a multiple of it:

    eval(n)         n * s_query
    template search search_passes * judged * s_query, once per training sample (seed and k):
                    every method with `template: auto` reads its memoized choice
    choose prompts  passes * judged * s_query: a prompt method's own passes beyond the search
                    (MethodSpec.choice_passes of its config; CHOICE_EXTRA_PASSES by default)
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
CPU: soft prompts 3, LoRA 4.5, full fine-tuning 7 (AdamW over every weight). A hybrid costs its
two sides. The runner corrects the estimate with each finished
run's measured/estimated ratio.

What a budget buys, in this order (`_rank`): every method once; the whole plan at k >= 4; two
seeds of every method (a score without its spread over seeds cannot be compared); a larger k;
the other seeds; the curve; test rows up to MIN_TEST; and last, the fit protocol's refinements.
Test rows are cut before k, but not below MIN_PART_TEST (100: on fewer, methods a few points
apart cannot be told apart, docs/benchmarks.md).

The fit protocol (`PROTOCOLS`, richest first): the plan gets the richest rung that buys as much
of the list above as the leanest does, and plan.yaml and the report say what it gave up.

    full         three lrs (LR_FACTORS x each method's default), early stopping up to the cap
                 (epochs_for(n)), refit on every row                      about 3.8x one plain run
    one lr       each method's default lr: gives up the lr choice       about 2.2x
    lean cap     + the cap at about half the expected length (epochs_for(n, lean=True)): gives up
                 the epochs where validation might still have improved  (a cap of 3 on 30 rows)
    no refit     + the trial's best weights are kept, trained on 3/4 of the rows (the rest judged
                 early stopping): gives up a quarter of a tiny sample   about 0.43x of lean cap's
                 training on the demo task (30 rows x 3 epochs instead of 30 x 3 + 40 x 3)

Where a sample is too small to hold rows out (holds_out: k=1 per class, or under 8 rows), a
learning method trains on every row at its default lr to the cap: no trials, no early stopping,
no refit. The estimate is that one run, the rungs differ only by the cap, and the report says so
instead of the rung's list.

The order is a judgement, not a measurement: the lr choice goes first because it costs the most
(two more trials) and, judged on a quarter of a tiny sample, its trials are often within noise of
each other; the cap next, because at these sizes validation peaked early (sst2 K=16: lora's at
epoch 5 of 24 rows, 120 rows seen); the refit last, because it is the one step that changes
which rows the kept weights saw.

A plan that pins `train.lr_search`, `train.epochs` or `train.refit` keeps its value on every rung.

The default plan's extras (compare/plan.py IF_IT_FITS: instruction_search, whose search scores
its seeds, rounds x edits and calibration: MethodSpec.choice_passes) join last: only where the
rank above holds with them at the chosen rung; otherwise plan.yaml's `resolved.left_out` names
them and the report says so.

Sizes (`auto`):
    k       16, 8, 4, 2, 1 per class with k * classes <= 128 (generation: 64, 32, 16 rows)
    curve   k/4, k, 4k where the data has them (4k * classes <= 512); 4k is dropped first
    n_test  as many test rows as fit the budget, at least MIN_TEST; cut (not below
            MIN_PART_TEST) where the whole plan does not fit
    sensitivity rows: min(200, n_test), at most SENSITIVITY_SHARE of the budget
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from tailorlm.data.task import Task
from tailorlm.methods.selection import judged_rows
from tailorlm.methods.tuned import LR_FACTORS, MAX_EVALUATIONS, VAL_FRACTION, TrainFields

PROBE_ROWS = 24
# passes over the judged rows a prompt method scores beyond the shared template search (one pass
# per built-in template of the task's kind, 7 for classification, 2 for generation): few_shot's 4
# demonstration sets with longer prompts, and calibration. Fitted to the sst2, trec and e2e runs
# (as 7 + 5 per prompt method, before the search was shared: an upper bound now).
CHOICE_EXTRA_PASSES = 5
EXAMPLE_PASSES = 240
MAX_EPOCHS = 20  # of the expected training length
MIN_CAP, MAX_CAP = 10, 30  # the cap early stopping trains up to
PATIENCE = TrainFields.patience  # evaluations past the best before a trial stops
MIN_TEST = 300
MIN_PART_TEST = 100  # test rows when the whole plan does not fit, at least (or the whole file)
MIN_SEEDS = 2  # seeds a score needs for its spread: bought before a larger k
SENSITIVITY_SHARE = 0.2  # of the budget, at most, for the wording-sensitivity probe
MIN_SENSITIVITY = 20
# Share of the budget the estimate may fill. It was 0.85 while estimates ran short; with the
# template search shared and checkpoints by the clock they run long: on the demo task, against a
# probe of 0.058-0.063 s/query (this machine, 12:58-13:00 UTC, load ~2), the merged-main demo's
# mean fits were 0.36 (prompt_template) to 0.92 (lora) of their estimates, and one `full` fit
# without refit measured here 27.9 s against 38.2 s. The estimate is the margin; the runner
# still skips the optional runs the time left cannot hold.
SAFETY = 1.0


@dataclass
class Probe:
    s_query: float  # seconds per test query, zero-shot
    tok_s: float  # tokens the model processes per second in evaluation
    row_tokens: float  # mean tokens of a training row (prompt + target)
    n_labels: int
    search_passes: int = 7  # the shared template search: one pass per built-in template


@dataclass(frozen=True)
class Protocol:
    """How every learning method is fitted (methods/trainable.py), one rung of `PROTOCOLS`."""

    trials: int  # learning rates tried on held-out rows (len(LR_FACTORS)), or 1: the default
    lean: bool  # the epoch cap at about half the expected length
    refit: bool  # after the choice, a refit on every row
    name: str = field(default="", compare=False)

    def gives_up(self) -> list[str]:
        """What this rung gives up against the full protocol, in words for plan.yaml and the
        report."""
        out = []
        if self.trials == 1:
            out.append(f"one learning rate per method (its default), not the best of "
                       f"{len(LR_FACTORS)} on held-out rows")
        if self.lean:
            out.append("epochs capped at about half the expected length (epochs_for(n, "
                       "lean=True)): early stopping may stop before validation stops improving")
        if not self.refit:
            out.append("no refit: the kept weights are the trial's, trained on 3/4 of the "
                       "training rows (the other 1/4 judged early stopping)")
        return out


PROTOCOLS = (Protocol(len(LR_FACTORS), False, True, "full"), Protocol(1, False, True, "one lr"),
             Protocol(1, True, True, "lean cap"), Protocol(1, True, False, "no refit"))


def protocols(train_tree: dict) -> list[Protocol]:
    """The rungs a plan's `train:` allows, richest first: a pinned lr_search, epochs or refit
    holds on every rung (and the rungs that would change it collapse into one)."""
    out = []
    for rung in PROTOCOLS:
        lr, refit = train_tree.get("lr_search", "auto"), train_tree.get("refit", "auto")
        rung = Protocol(len(LR_FACTORS) if lr is True else 1 if lr is False else rung.trials,
                        rung.lean and train_tree.get("epochs", "auto") == "auto",
                        refit if isinstance(refit, bool) else rung.refit, rung.name)
        if rung not in out:
            out.append(rung)
    return out


def learning_options(sizing: dict) -> dict:
    """The options a sizing sets on every learning method's runs (a plan's own win): the lr
    multiples to try, and the refit where the rung drops it."""
    options = {}
    if sizing.get("lr_search"):
        options["lr_factors"] = sizing["lr_factors"]
    if sizing.get("refit") is False:
        options["refit"] = False
    return options


def protocol_info(sizing: dict) -> dict:
    """What run_seconds needs to know of a sizing's protocol (see learning_options)."""
    return {"trials": len(sizing["lr_factors"]) if sizing.get("lr_search") else 1,
            "refit": sizing.get("refit", True), "lean": sizing.get("lean_epochs", False)}


def probe(backend, train: Task, test: Task) -> Probe:
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.methods.contract import zero_shot_adapter
    from tailorlm.methods.templates import builtin_templates

    adapter = zero_shot_adapter(train)
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
    texts = [_prompt_text(adapter.prompt(e)) + " " + e.target for e in train.examples[:64]]
    row_tokens = sum(len(backend.encode(t)) for t in texts) / max(len(texts), 1)
    # Decoding runs one token per row per step: its tokens/s says nothing of training, which
    # runs whole rows at once; time a forward over training rows instead.
    tok_s = n_tokens / seconds if test.kind != "generation" else _forward_rate(backend, texts[:16])
    return Probe(s_query=seconds / len(rows), tok_s=tok_s, row_tokens=row_tokens,
                 n_labels=len(train.labels or []),
                 search_passes=len(builtin_templates(train)))


def remote_probe(backend, train: Task, test: Task) -> Probe:
    """The probe of a model behind an API: seconds per zero-shot query from real calls (cached:
    a rerun costs nothing and measures near 0). Nothing trains there, so the training rate
    is the evaluation rate."""
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.methods.contract import zero_shot_adapter
    from tailorlm.methods.templates import builtin_templates

    adapter = zero_shot_adapter(train)
    rows = test.with_examples(test.examples[:PROBE_ROWS])
    start = time.perf_counter()
    tokens = evaluate(backend, adapter, rows).tokens
    seconds = max(time.perf_counter() - start, 1e-3)
    texts = [_prompt_text(adapter.prompt(e)) + " " + e.target for e in train.examples[:64]]
    row_tokens = sum(backend.count_tokens(t) for t in texts) / max(len(texts), 1)
    return Probe(s_query=seconds / len(rows), tok_s=max(tokens, 1) / seconds,
                 row_tokens=row_tokens, n_labels=len(train.labels or []),
                 search_passes=len(builtin_templates(train)))


def _prompt_text(prompt) -> str:
    return prompt.shared + prompt.own


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
    return sum(_shot_counts(task, k))


def holds_out(task: Task, k: int) -> bool:
    """Whether a learning method's fit on a k-per-class sample holds rows out to judge on
    (methods/trainable.held_out): 8 rows at least and, for classification, a label with 2 rows
    to spare one. Where it does not (k=1 per class), every row trains for the epoch cap at the
    default lr: no trials, no early stopping, no refit."""
    counts = _shot_counts(task, k)
    return sum(counts) >= 8 and (task.kind != "classification" or max(counts) >= 2)


def _shot_counts(task: Task, k: int) -> list[int]:
    """Rows per label of a k-per-class sample (one count: a generation task's k rows)."""
    if task.kind != "classification":
        return [min(k, len(task))]
    counts: dict[str, int] = {}
    for e in task.examples:
        counts[e.label] = counts.get(e.label, 0) + 1
    return [min(k, c) for c in counts.values()] or [0]


def method_costs(name: str, config: dict | None = None) -> dict:
    """What the estimate needs of a method: its family, the train_cost of each side, and (what
    trains nothing) the passes its choice scores (MethodSpec.choice_passes of its config)."""
    from tailorlm.methods import get_method

    spec = get_method(name)
    sides = spec.side_costs
    resolved = spec.config.from_dict(config or {})
    passes = CHOICE_EXTRA_PASSES if spec.choice_passes is None else spec.choice_passes(resolved)
    floors = tuple(getattr(part, "min_epochs", 0) for part in resolved.parts())
    # each side's fit as methods/fit_memo.py would know it again (None: never kept)
    fits = tuple(json.dumps([part_name, part.to_dict()], sort_keys=True, default=str)
                 if get_method(part_name).shared_fit else None
                 for part_name, part in zip(spec.parts or (name,), resolved.parts()))
    return {"family": spec.family, "sides": sides, "passes": passes, "min_epochs": floors,
            "fits": fits}


def with_shared_fits(method_info: dict[str, dict]) -> dict[str, dict]:
    """`method_info` with `free_sides` on each method made of parts: the sides another method of
    the plan fits as a whole, with the same config (a hybrid's LoRA beside the plan's `lora`),
    which the runner takes from that run (methods/fit_memo.py) instead of training again."""
    whole = {info["fits"][0] for info in method_info.values()
             if len(info.get("fits", ())) == 1 and info["fits"][0] is not None}
    return {name: {**info, "free_sides": tuple(
                i for i, fit in enumerate(info.get("fits", ()))
                if len(info["fits"]) > 1 and fit in whole)}
            for name, info in method_info.items()}


def estimate_fit(p: Probe, sides: tuple[float, ...], n: int, epochs: int,
                 trials: int = 1, refit: bool = True,
                 passes: float = CHOICE_EXTRA_PASSES, min_epochs: tuple[int, ...] = (),
                 free_sides: tuple[int, ...] = (), judged: bool = True) -> float:
    """Seconds to fit one method on n rows (a hybrid: both sides); `epochs` is the cap, `trials`
    the learning rates tried, `refit` whether a refit on all n rows follows, `passes` what a
    side that trains nothing scores to choose, `min_epochs` each side's floor (TrainFields; the
    best epoch is never earlier), `free_sides` the sides another run of the plan fits
    (with_shared_fits), `judged` whether rows can be held out at all (holds_out: else one run
    of n rows to the cap) (module doc). The shared template search is counted once per training
    sample by the plan's total, not here."""
    total = 0.0
    for i, cost in enumerate(sides):
        if i in free_sides:
            continue
        if not cost:  # nothing trained: prompts are chosen by scoring candidates
            total += passes * judged_rows(n, p.n_labels) * p.s_query
            continue
        if not judged:  # nothing to choose with: every row, the default lr, to the cap
            total += n * epochs * p.row_tokens * cost / p.tok_s
            continue
        n_fit = math.ceil((1 - VAL_FRACTION) * n)
        n_val = judged_rows(math.floor(VAL_FRACTION * n), p.n_labels)
        floor = min_epochs[i] if i < len(min_epochs) else 0
        e = min(epochs, max(expected_epochs(n_fit), floor))
        every = max(1.0, epochs / MAX_EVALUATIONS)  # epochs between evaluations
        e_trial = min(epochs, e + PATIENCE * every)
        evaluations = min(MAX_EVALUATIONS, math.ceil(e_trial / every))
        trial = n_fit * e_trial * p.row_tokens * cost / p.tok_s + evaluations * n_val * p.s_query
        total += trials * trial + (n * e * p.row_tokens * cost / p.tok_s if refit else 0.0)
    return total


def variant_count(info: dict) -> int:
    """Sensitivity variants: as fitted, each paraphrase, and demonstration orders (prompts)."""
    return 1 + 6 + (3 if info["family"] == "prompt" else 0)


def run_seconds(p: Probe, info: dict, n: int, epochs: int, n_test: int, sens_rows: int,
                train_score: bool, judged: bool = True) -> float:
    """Estimated seconds of one run: fit, evaluation, sensitivity, and the train-score pass.
    `info["trials"]`: the learning rates each learning side tries (1 unless the plan asks);
    `info["refit"]`: whether each refits on every row (True unless the plan drops it);
    `judged`: whether the sample holds rows out (holds_out)."""
    return (estimate_fit(p, info["sides"], n, epochs, info.get("trials", 1),
                         info.get("refit", True), info.get("passes", CHOICE_EXTRA_PASSES),
                         info.get("min_epochs", ()), info.get("free_sides", ()), judged)
            + (n_test + sens_rows * variant_count(info)) * p.s_query
            + (judged_rows(n, p.n_labels) * p.s_query if train_score else 0.0))


def size_plan(plan, train: Task, test: Task, p: Probe, method_info: dict[str, dict]) -> dict:
    """The plan's `auto` values resolved against the data and the probe: {"k", "curve",
    "max_test", "sensitivity", "seeds_fit", "lr_search", "lr_factors", "lean_epochs", "refit",
    "protocol", "left_out", "gives_up", "estimate_seconds", "notes", "whole"}.

    Each rung of the fit protocol (`protocols`) is sized (`_size`); the plan gets the richest
    rung whose sizing ranks as high as any (`_rank`): a leaner fit only where it buys more
    seeds, a larger k, the curve or test rows. The default plan's extras (plan.IF_IT_FITS:
    instruction_search) are sized on top of the rest at that rung and kept only where the rank
    holds; else `left_out` names them. `gives_up` says, in words, what the chosen rung and sizes
    gave up (plan.yaml and the report show it).
    """
    optional = [m for m in plan.optional if m in method_info]
    core = {m: info for m, info in method_info.items() if m not in optional} or method_info
    ladder = protocols(plan.tree["train"])
    learns = any(any(info["sides"]) for info in core.values())
    if not learns:  # the protocol changes nothing: the plainest rung, no lr search
        ladder = [Protocol(1, False, True, "none: nothing trains")]
    sized = [(_size(plan, train, test, p, core, rung), rung) for rung in ladder]
    best = max(s["rank"] for s, _ in sized)
    chosen, rung = next((s, r) for s, r in sized if s["rank"] == best)
    left_out = []
    if optional and core is not method_info:  # the default plan's extras join if they cost nothing
        every = _size(plan, train, test, p, method_info, rung)
        if every["rank"] >= chosen["rank"]:
            chosen = every
        else:
            left_out = optional
    gives_up = _protocol_gives_up(rung, train, chosen) if learns else []
    gives_up += [f"{', '.join(left_out)} left out: the default plan runs it only where the "
                 "budget holds it without giving up seeds, k, the curve, test rows or the fit "
                 "protocol of the others"] if left_out else []
    return {**{k: v for k, v in chosen.items() if k not in ("rank", "cuts")},
            "left_out": left_out, "notes": chosen["notes"] + gives_up,
            "gives_up": chosen["cuts"] + gives_up}


def _protocol_gives_up(rung: Protocol, train: Task, chosen: dict) -> list[str]:
    """What the chosen rung gives up, in words; at a k where no row can be held out
    (holds_out), what the fit does instead, and the rung's lines only for the curve's k that
    hold rows out."""
    k = chosen["k"]
    lines = [f"fit protocol '{rung.name}': {g}" for g in rung.gives_up()]
    if holds_out(train, k):
        return lines
    unit = "per class" if train.kind == "classification" else "examples"
    cap = "the lean epoch cap (about half the expected length)" if rung.lean else "the epoch cap"
    out = [f"k={k} {unit}: too few rows to hold any out, so each learning method trains on "
           f"every row at its default lr to {cap}, without early stopping, an lr choice or a "
           f"refit"]
    held = [c for c in chosen.get("curve", []) if c != k and holds_out(train, c)]
    if held:
        out += [f"at k={', '.join(map(str, held))} {line}" for line in lines]
    return out


def _rank(fits: bool, whole: bool, seeds: int, n_seeds: int, k: int, curve: int,
          rows: int) -> tuple:
    """What a sizing buys, most important first (module doc): tuples compare in this order."""
    return (fits, whole, seeds >= min(MIN_SEEDS, n_seeds), k, seeds, curve, min(rows, MIN_TEST))


def _size(plan, train: Task, test: Task, p: Probe, method_info: dict[str, dict],
          rung: Protocol) -> dict:
    """size_plan at one rung of the fit protocol.

    For each k (and curve) the whole plan is sized on as many test rows as fit; where it does
    not fit, cut plans: every seed, MIN_SEEDS seeds, or one run per method at k without the
    curve, each on fewer test rows (not below MIN_PART_TEST) and the wording probe on
    MIN_SENSITIVITY rows. The candidate with the highest `_rank` is kept; the runner runs
    seeds in order (seed 1 of every method before seed 2 of any) and skips what the time left
    cannot hold. If nothing fits, the cheapest required runs (they run whatever the budget).
    """
    t = plan.tree
    method_info = {m: {**info, "trials": rung.trials, "lean": rung.lean, "refit": rung.refit}
                   for m, info in method_info.items()}
    budget = t["budget_minutes"] * 60 * SAFETY
    n_seeds = len(plan.seeds)
    n_classes = len(train.labels) if train.kind == "classification" else 1
    ks = [t["train"]["k"]] if t["train"]["k"] != "auto" else (
        [c for c in (16, 8, 4, 2, 1) if c * n_classes <= 128] or [1]
        if train.kind == "classification" else [64, 32, 16])
    sens = _sensitivity_rows(t, p, method_info, budget, len(test))
    cut_sens = min(sens, MIN_SENSITIVITY) if t["eval"]["sensitivity"] == "auto" else sens
    options = [(k, c) for k in ks for c in _curves(t["train"]["curve"], train, k, n_classes)]
    options += [(k, [k]) for k in ks if t["train"]["curve"] == "auto"]  # no curve: last resort
    candidates = []
    for k, curve in options:
        fixed, per_row = _totals(plan, p, method_info, train, k, curve, sens)
        max_test = t["eval"]["max_test"]
        if max_test == "auto":
            room = int((budget - fixed) / per_row) if per_row else len(test)
            max_test = max(min(len(test), MIN_TEST), min(len(test), room))
        else:
            max_test = len(test) if max_test is None else min(max_test, len(test))
        whole = fixed + per_row * max_test
        # a whole plan at a tiny k teaches less than most of a plan at a useful one
        full = whole <= budget and k >= min(4, ks[0])
        candidates.append({"k": k, "curve": curve, "max_test": max_test,
                           "sensitivity": min(sens, max_test), "estimate_seconds": whole,
                           "seeds_fit": n_seeds, "whole": full, "tier": "whole",
                           "rank": _rank(whole <= budget, full, n_seeds, n_seeds, k, len(curve),
                                         max_test)})
        # cut: the seeds at k without the curve; their test rows shrink (not below
        # MIN_PART_TEST) until they fit; the wording probe shrinks to MIN_SENSITIVITY rows
        for tier, seeds in (("seeds", n_seeds), ("spread", min(MIN_SEEDS, n_seeds)),
                            ("required", 1)):
            t_fixed, t_row = _totals(plan, p, method_info, train, k, [k], cut_sens, seeds=seeds)
            n_rows = max_test if t["eval"]["max_test"] != "auto" else max(
                min(len(test), MIN_PART_TEST), min(max_test, int((budget - t_fixed) / t_row)))
            needed = t_fixed + t_row * n_rows
            candidates.append({"k": k, "curve": curve, "max_test": n_rows,
                               "sensitivity": min(cut_sens, n_rows),
                               "estimate_seconds": whole - per_row * (max_test - n_rows),
                               "seeds_fit": seeds, "whole": False, "tier": tier,
                               "needed": needed,
                               "rank": _rank(needed <= budget, False, seeds, n_seeds, k, 1,
                                             n_rows)})
    fitting = [c for c in candidates if c["rank"][0]]
    if fitting:
        chosen = max(fitting, key=lambda c: c["rank"])
    else:  # the cheapest required runs; across rungs, the cheapest wins
        chosen = min((c for c in candidates if c["tier"] == "required"), key=lambda c: c["needed"])
        chosen = {**chosen, "rank": (False, -chosen["needed"])}
    return {**{key: v for key, v in chosen.items() if key not in ("tier", "needed")},
            "lr_search": rung.trials > 1,
            "lr_factors": list(LR_FACTORS) if rung.trials > 1 else [1.0],
            "lean_epochs": rung.lean, "refit": rung.refit, "protocol": rung.name,
            **_notes(t, train, chosen, ks[0], bool(fitting))}


def _notes(t: dict, train: Task, chosen: dict, k_preferred: int, fits: bool) -> dict:
    """{"notes": what the terminal prints, "cuts": what the sizes gave up (for gives_up)}."""
    unit = "per class" if train.kind == "classification" else "examples"
    cuts = []
    if chosen["k"] != k_preferred:
        cuts.append(f"k={chosen['k']} {unit} (not {k_preferred}) to fit the budget")
    minutes = f"{chosen['estimate_seconds'] / 60:.0f} min"
    over = f"over the {t['budget_minutes']:g} min budget"
    if not fits:
        cuts.append(f"even one run per method needs about {chosen['needed'] / 60:.0f} min: "
                    "they run anyway; nothing else does")
    elif chosen["tier"] == "required":
        cuts.append(f"the whole plan needs about {minutes}, {over}: the runner skips the extra "
                    "seeds and curve points that do not fit")
    elif chosen["tier"] == "spread":
        cuts.append(f"the whole plan needs about {minutes}, {over}: {chosen['seeds_fit']} seeds "
                    f"of every method at k fit on {chosen['max_test']} test rows; the runner "
                    "skips the other seeds and the curve points that do not fit")
    elif chosen["tier"] == "seeds":
        cuts.append(f"the whole plan needs about {minutes}, {over}: every seed at k fits on "
                    f"{chosen['max_test']} test rows; the runner skips the curve points that do "
                    "not fit")
    return {"notes": list(cuts), "cuts": cuts}


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
    for kk, runs in points:  # the shared template search, once per training sample
        fixed += runs * p.search_passes * judged_rows(n_shots(train, kk), p.n_labels) * p.s_query
    for info in method_info.values():
        for kk, runs in points:
            n = n_shots(train, kk)
            epochs = t["train"]["epochs"] if t["train"]["epochs"] != "auto" else \
                epochs_for(n, info.get("lean", False))
            plain = run_seconds(p, info, n, epochs, 0, 0, t["eval"]["train_score"],
                                holds_out(train, kk))
            fixed += runs * plain + (sens_rows * variant_count(info) * p.s_query
                                     if kk == k else 0.0)
            per_row += runs * p.s_query
    return fixed, per_row
