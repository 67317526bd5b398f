"""A whole comparison from a plan: data, model, sizing, runs in priority order, reports.

    plan ─► data (k-shot pools, seeded test subset) ─► model ─► probe ─► size auto values
         ─► runs: every method at k, seed 0 (+ sensitivity, latency)   required
                  every method at k, other seeds              skipped if the budget runs out
                  every method at the other curve points      skipped if the budget runs out
         ─► OUT/results.jsonl (appended) ─► summary ─► report.md, report.json, report.html

`OUT/plan.yaml` records the plan as resolved (auto values filled in) and the hashes of the data
it ran on (`resolved.data`: train, val, and the test rows scored), so `tailor recommend OUT`
rebuilds the reports from the stored results without loading a model, from rows of that data
only. A rerun on an OUT whose data files changed is refused: its results would average two
datasets. Test rows that repeat training rows exactly are counted and warned about.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tailorlm.compare.budget import epochs_for, holds_out, learning_options, method_costs, \
    n_shots, probe, protocol_info, remote_probe, run_seconds, size_plan, with_shared_fits
from tailorlm.compare.plan import TREE, Plan, check_data, check_metric, method_config
from tailorlm.compare.runner import Run, evaluation_subset, run_comparison
from tailorlm.data.task import Task
from tailorlm.errors import TailorError

PLAN_FILE = "plan.yaml"


def load_data(plan: Plan) -> tuple[Task, Task, Task | None]:
    from tailorlm.data.load import load_builtin_task, load_task

    check_data(plan)
    t = plan.tree
    if t["task"]:
        train, test = load_builtin_task(t["task"])
        check_metric(plan, train.kind)
        return train, test, None
    d = t["data"]
    fields = {k: d[k] for k in ("text_field", "label_field", "input_field", "target_field")}
    common = dict(description=d["description"] or "", name=task_name(d["train"]), **fields)
    train = load_task(d["train"], kind=d["kind"], verbalizer=d["verbalizer"] or None, **common)
    check_metric(plan, train.kind)  # a metric of the wrong kind fails before any model loads
    same = dict(kind=train.kind, labels=train.labels or None,
                verbalizer=train.verbalizer or None)
    if train.kind != "classification":
        same.update(labels=None, verbalizer=None)
    test = load_task(d["test"], **same, **common)
    val = load_task(d["val"], **same, **common) if d["val"] else None
    return train, test, val


def task_name(path: str) -> str:
    """The data's name for reports: the file's stem, or its folder's where the stem only says
    which split it is (sst2/train.jsonl -> sst2)."""
    p = Path(str(path))
    splits = {"train", "test", "dev", "val", "valid", "validation"}
    return p.parent.name if p.stem.lower() in splits and p.parent.name else p.stem


def plan_costs(plan: Plan) -> dict[str, dict]:
    """What the budget needs of each method of the plan (compare/budget.py method_costs), with
    the parts another run of the plan fits marked free (with_shared_fits)."""
    return with_shared_fits({m.method: method_costs(m.method, method_config(plan, m))
                             for m in plan.methods})


def plan_runs(plan: Plan, train: Task, sizing: dict, p) -> list[Run]:
    """The plan's runs, most important first (the runner may skip the optional tail)."""
    t = plan.tree
    k, seeds = sizing["k"], plan.seeds
    main, extra, curve = [], [], []
    costs = plan_costs(plan)
    for entry in plan.methods:
        base = method_config(plan, entry)
        info = {**costs[entry.method], **protocol_info(sizing)}
        for kk in [k] + [c for c in sizing["curve"] if c != k]:
            n = n_shots(train, kk)
            config = dict(base)
            if t["train"]["epochs"] == "auto" and _trains(info):
                config.setdefault("epochs", epochs_for(n, sizing.get("lean_epochs", False)))
            if _trains(info):
                for key, value in learning_options(sizing).items():
                    config.setdefault(key, value)
            for j, seed in enumerate(seeds if kk == k else seeds[:1]):
                first = kk == k and j == 0
                sens = sizing["sensitivity"] if first else 0
                estimate = run_seconds(p, info, n, config.get("epochs", 5), sizing["max_test"],
                                       sens, t["eval"]["train_score"],
                                       holds_out(train, kk)) if p else 0.0
                run = Run(entry.method, config, seed=seed, k=kk,
                          role="main" if kk == k else "curve", sensitivity=sens,
                          train_score=t["eval"]["train_score"], latency=first,
                          estimate=estimate, required=first)
                (main if first else extra if kk == k else curve).append(run)
    extra.sort(key=lambda r: r.seed)  # seed 1 of every method before seed 2 of any
    return main + extra + curve


def _recorded_sizing(plan: Plan, out: Path) -> dict | None:
    """The sizes OUT's comparison was run with, when OUT holds results of this same plan: a
    rerun (after an interruption, or with more budget) continues it on the same test rows and k
    instead of sizing anew, which would start over on other rows. Another plan is refused."""
    from tailorlm.compare.runner import read_results

    path = out / PLAN_FILE
    if not path.exists() or not read_results(out):
        return None
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    was = _flat(recorded)
    now = _flat(yaml.safe_load(yaml.safe_dump(plan.to_dict(), sort_keys=False)))
    default = _flat(TREE)  # a key newer than the recorded plan counts as its default there
    differs = [key for key in sorted(set(was) | set(now))
               if key.split(".")[0] not in ("resolved", "budget_minutes", "api")
               and was.get(key, default.get(key)) != now.get(key)]
    if differs:
        raise TailorError(f"{out} holds a comparison of another plan ({', '.join(differs[:5])} "
                          "differ): give a new --out, or the same plan to continue it (only "
                          "budget_minutes may change)")
    sizes = recorded.get("resolved") or {}
    if not all(key in sizes for key in ("k", "curve", "max_test", "sensitivity")):
        return None
    return {**{key: sizes[key] for key in ("k", "curve", "max_test", "sensitivity")},
            **{key: sizes[key] for key in ("lr_search", "lr_factors", "lean_epochs", "refit",
                                             "protocol", "gives_up", "left_out",
                                             "seeds_fit")
               if key in sizes},
            "estimate_seconds": sizes.get("estimate_seconds", 0.0),
            "notes": [f"continuing the comparison in {out} with its recorded sizes"]}


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return {key.rstrip("."): value for key, value in flat.items()}


def data_hashes(train: Task, val: Task | None, test: Task) -> dict:
    """What every results row of this data carries (runner.py), and plan.yaml records."""
    return {"train_sha256": train.fingerprint(), "val_sha256": val.fingerprint() if val else None,
            "test_sha256": test.fingerprint()}


def check_same_data(out: Path, train: Task, val: Task | None, test: Task) -> None:
    """Refuse to continue a comparison in OUT on data other than the one it ran on (checked
    before the model loads: the test rows are those the recorded sizes pick)."""
    from tailorlm.compare.runner import read_results

    path = out / PLAN_FILE
    if not path.exists() or not read_results(out):
        return
    resolved = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("resolved") or {}
    recorded = resolved.get("data")
    if not recorded or "max_test" not in resolved:
        return
    data = data_hashes(train, val, evaluation_subset(test, resolved["max_test"], seed=0))
    changed = [key.removesuffix("_sha256") for key in data if recorded.get(key) != data[key]]
    if changed:
        raise TailorError(f"{out} holds results of other data (the {', '.join(changed)} data "
                          "changed since): give a new --out, or restore the files it ran on")


def duplicates(train: Task, test: Task) -> str | None:
    """One warning line when test rows repeat training rows exactly (same input and answer)."""
    seen = {(e.input, e.target, e.label) for e in train.examples}
    inputs = {e.input for e in train.examples}
    same = sum((e.input, e.target, e.label) in seen for e in test.examples)
    if not same:
        return None
    only_input = sum(e.input in inputs for e in test.examples) - same
    more = f" (and {only_input} more with the same input, another answer)" if only_input else ""
    return (f"warning: {same} of {len(test)} test rows duplicate training rows exactly{more}: "
            "scores on them measure memory, not generalisation; remove them from the test file")


def _seeds_line(plan: Plan, sizing: dict) -> str:
    """'3 seeds', or '3 seeds (2 of each method within the budget)' where the sizing holds fewer."""
    fit = sizing.get("seeds_fit", len(plan.seeds))
    return f"{len(plan.seeds)} seeds" + (f" ({fit} of each method within the budget)"
                                         if fit < len(plan.seeds) else "")


def without(plan: Plan, names: list[str]) -> Plan:
    """The plan without the methods its sizing left out (plan.IF_IT_FITS that did not fit)."""
    return Plan(plan.tree, [m for m in plan.methods if m.method not in names], plan.source)


def _trains(info: dict) -> bool:
    return any(info["sides"])


def run_plan(plan: Plan, out: str | Path, *, on_event=None, on_note=print) -> dict:
    """Run the plan into OUT and write its reports; returns the summary."""
    from tailorlm.compare.summary import write_reports
    from tailorlm.models import load_backend

    out = Path(out)
    started = time.perf_counter()
    train, test, val = load_data(plan)
    if train.kind == "classification" and not train.labels:
        raise TailorError("the training data has no labels")
    check_same_data(out, train, val, test)
    costs = plan.tree["costs"]
    backend = load_backend(plan.tree["model"], dtype=plan.tree["dtype"], api={
        **plan.tree["api"], "usd_per_1m_input": costs["api_usd_per_1m_input_tokens"],
        "usd_per_1m_output": costs["api_usd_per_1m_output_tokens"]})
    remote = backend.where == "remote"
    if remote:
        plan = _text_only(plan, backend, on_note)
    p = remote_probe(backend, train, test) if remote else probe(backend, train, test)
    sizing = _recorded_sizing(plan, out) or size_plan(plan, train, test, p, plan_costs(plan))
    for note in sizing["notes"]:
        on_note(f"plan: {note}")
    unit = "per class" if train.kind == "classification" else "examples"
    whole = f"the whole plan estimated at {sizing['estimate_seconds'] / 60:.0f} min"
    on_note(f"plan: k={sizing['k']} {unit}, curve {sizing['curve']}, "
            f"{_seeds_line(plan, sizing)}, {sizing['max_test']} of {len(test)} test rows, "
            f"sensitivity on {sizing['sensitivity']}; {whole}, "
            f"{plan.tree['budget_minutes']:g} min budget for this call")
    resolved = plan.to_dict()
    n_test_available = len(test)
    test = evaluation_subset(test, sizing["max_test"], seed=0)  # stratified, the same every run
    data = data_hashes(train, val, test)
    warning = duplicates(train, test)
    if warning:
        on_note(warning)
    resolved["resolved"] = {**{k: v for k, v in sizing.items() if k != "notes"},
                            "n_train_available": len(train), "n_test_available": n_test_available,
                            "probe_seconds_per_query": p.s_query, "data": data,
                            "duplicates": warning}
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    runs = plan_runs(without(plan, sizing.get("left_out") or []), train, sizing, p)
    if remote:
        on_note(_api_projection(backend, plan, runs, p, train))
    rows = run_comparison(backend, train, test, runs, out, metric=plan.tree["eval"]["metric"],
                          val=val, on_event=on_event,
                          budget_seconds=plan.tree["budget_minutes"] * 60 - (
                              time.perf_counter() - started))
    skipped = [r for r in rows if "skipped" in r]
    if rows and len(skipped) == len(rows):
        raise TailorError(every_run_failed(skipped, out))
    wall = time.perf_counter() - started
    return write_reports(out, skipped=skipped, wall_seconds=wall)


def every_run_failed(rows: list[dict], out: Path) -> str:
    """One line naming why each run of a comparison that kept no result failed, by reason."""
    by_reason: dict[str, list[str]] = {}
    for row in rows:
        reason = " ".join(row["reason"].split())  # an exception's message may span lines
        by_reason.setdefault(reason[:160], []).append(row["run"])
    failures = "; ".join(f"{', '.join(runs[:3])}{f' +{len(runs) - 3}' if len(runs) > 3 else ''}"
                         f": {reason}" for reason, runs in by_reason.items())
    return (f"every run of the comparison failed, no result kept ({failures}); tracebacks in "
            f"{out / 'errors.log'}")


def _text_only(plan: Plan, backend, on_note) -> Plan:
    """The plan without the methods that need weights: an endpoint takes text only."""
    from tailorlm.methods import get_method

    keep = [m for m in plan.methods if not get_method(m.method).needs_weights]
    dropped = [m.method for m in plan.methods if m not in keep]
    if not keep:
        raise TailorError(f"{backend.host} is a remote endpoint and every method in the plan "
                          "needs weights: use prompt_template, few_shot or instruction_search")
    if dropped:
        on_note(f"plan: {', '.join(dropped)} need the model's weights: not run against "
                f"{backend.host}")
    return Plan(plan.tree, keep, plan.source, [m for m in plan.optional if m not in dropped])


def _api_projection(backend, plan: Plan, runs: list[Run], p, train: Task) -> str:
    """Calls, tokens and dollars the runs are expected to cost, printed before they start."""
    queries = sum(r.estimate for r in runs) / max(p.s_query, 1e-9)
    cost = backend.project(queries, p.row_tokens, p.n_labels)
    api = plan.tree["api"]
    caps = ", ".join(f"{k}={api[k]}" for k in ("max_calls", "max_usd") if api[k] is not None)
    return (f"api: {backend.host} model {backend.identity}, tier {backend.capability.tier}; "
            f"projected about {cost['calls']:,} calls, {cost['prompt_tokens']:,} prompt + "
            f"{cost['completion_tokens']:,} completion tokens, ${cost['usd']:.4f} (answers "
            f"already cached cost nothing){'; caps ' + caps if caps else ''}")
