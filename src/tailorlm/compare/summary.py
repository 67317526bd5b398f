"""From `results.jsonl` to the summary every report renders (docs/report-schema.md).

Per method, over the seeds at the plan's k: score mean ± std (each run keeps its bootstrap CI),
costs (means), the overfitting gap (score on the rows it was fitted on minus test score) and its
risk, prompt sensitivity, the gain over zero-shot, and the cost projection:

    hardware $/s    = cpu_hour_usd / 3600 (gpu_hour_usd on a GPU)
    fit_usd         = fit seconds * hardware $/s          one-off; also the cost of a refit on a
                                                          new base model ("maintenance")
    per_query_usd   = measured seconds per query * hardware $/s     (local)
                    = prompt tokens * input price + answer tokens * output price  (API endpoint;
                      also shown for every text prompt as api_per_query_usd: the same prompt
                      sent to a hosted model)
    cost after N queries          = fit_usd + N * per_query_usd
    break-even vs a reference (T-Few: few-shot) = (fit_usd - fit_usd_ref) /
                                                  (per_query_usd_ref - per_query_usd)
                    the reference: the method present that declares the highest
                    MethodSpec.break_even_reference (few_shot, else prompt_template)

Overfitting risk: high when the gap is over 0.15 or the seed std over 0.05; medium over 0.05 or
0.02; else low (points of the task's 0-1 metric). The gap is measured on the rows a method was
fitted on (not those it held out); its validation score is shown beside it.

Only rows of the plan's data count (`resolved.data` in plan.yaml: the train, val and test hashes
every row carries). The zero-shot line and the break-even reference are the methods that declare
themselves so (rows carry `zero_shot_reference`, `break_even_reference` from MethodSpec); the
majority-class baseline comes from the test set's record (compare/baselines.py). Ties with the
best are decided by the paired bootstrap (compare/significance.py) at `eval.tie_level`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import yaml

from tailorlm.compare import baselines
from tailorlm.compare.classes import class_report
from tailorlm.compare.plan import COSTS
from tailorlm.compare.recommend import Constraints, recommend
from tailorlm.compare.runner import read_results, read_test_rows
from tailorlm.compare.significance import DEFAULT_LEVEL, Significance
from tailorlm.compare.tables import cost_performance, key_differences

RISK = {"high": (0.15, 0.05), "medium": (0.05, 0.02)}  # (gap, seed std) thresholds
RUN_LOG = "run_log.json"
ANSWER_TOKENS = 2.0  # tokens an API bills for a classification answer (a label's words)


def summarize(rows: list[dict], plan: dict, constraints=None, *, skipped=(),
              wall_seconds=None, calls: int = 1, records: dict | None = None,
              out: Path | None = None) -> dict:
    """The summary of `rows` (results.jsonl) under `plan` (plan.yaml); `records` are the test
    sets' records by test_sha256 (runner.read_test_rows), `out` the folder predictions files
    are read from (wrong examples)."""
    resolved = plan.get("resolved", {})
    level = (plan.get("eval") or {}).get("tie_level") or DEFAULT_LEVEL
    prices = {**COSTS, **(plan.get("costs") or {})}
    constraints = constraints or Constraints()
    if constraints.queries_per_day is None:  # the plan's volume unless the user gives one
        constraints = dataclasses.replace(constraints, queries_per_day=prices["queries_per_day"])
    qpd = constraints.queries_per_day
    rows, other_data = of_data([r for r in rows if "score" in r], resolved.get("data"))
    k = resolved.get("k", rows[0]["k"] if rows else None)
    order = list(dict.fromkeys(r["method"] for r in rows))
    main = [r for r in rows if r["k"] == k]
    methods = [_method(m, [r for r in main if r["method"] == m]) for m in order]
    methods = [m for m in methods if m is not None]
    first = rows[0] if rows else {}
    record = (records or {}).get(first.get("test_sha256"))
    majority = baselines.majority(record, first.get("metric") or "accuracy")
    baselines.flag_below(methods, majority)
    zero = baselines.zero_shot(methods)
    for m in methods:
        m["gain_over_zero_shot"] = None if zero is None else m["score_mean"] - zero["score_mean"]
        m["cost"] = _cost(m, prices, qpd)
    ref = baselines.break_even_reference(methods)
    for m in methods:
        m["break_even_queries"] = _break_even(m, ref) if ref is not None else None
    curves = _curves(rows, order)
    summary = {
        "task": first.get("task"), "kind": plan.get("kind") or _kind(first),
        "metric": first.get("metric"), "model": first.get("model"),
        "n_test": first.get("n_eval"), "n_train_available": resolved.get("n_train_available"),
        "k": k, "seeds": sorted({r["seed"] for r in rows if r["k"] == k}),
        "wall_seconds": wall_seconds, "calls": max(calls, 1),
        "prices": {k_: v for k_, v in prices.items()
                                                 if k_ != "queries_per_day"},
        "queries_per_day": qpd,
        "zero_shot": None if zero is None else {"method": zero["method"],
                                                "score": zero["score_mean"]},
        "break_even_reference": None if ref is None else ref["method"],
        "baselines": {"majority": majority,
                      "zero_shot": None if zero is None else {"method": zero["method"],
                                                              "score": zero["score_mean"]}},
        "rows_of_other_data": other_data,
        "data_warnings": [w for w in [resolved.get("duplicates")] if w],
        "plan_gives_up": list(resolved.get("gives_up") or []),  # compare/budget.py size_plan
        "methods": methods, "curves": curves, "crossings": _crossings(curves),
        "pareto": _pareto(methods), "skipped": list(skipped),
        "api": _api_usage(rows),
    }
    significance = Significance.from_rows(main, record, summary["metric"] or "accuracy", level)
    summary["recommendation"] = recommend(methods, constraints, significance, level)
    summary["constraints"] = dataclasses.asdict(constraints)
    summary["classes"] = class_report(main, summary["recommendation"]["method"], record, out)
    summary["tables"] = {"key_differences": key_differences(summary),
                         "cost_performance": cost_performance(summary)}
    return summary


def of_data(rows: list[dict], data: dict | None) -> tuple[list[dict], int]:
    """The rows run on the plan's data (train, val, test hashes), and how many others there
    were. Rows that carry no hashes (older results) are kept."""
    if not data:
        return rows, 0
    keys = ("train_sha256", "val_sha256", "test_sha256")
    keep = [r for r in rows if "test_sha256" not in r
            or all(r.get(key) == data.get(key) for key in keys)]
    return keep, len(rows) - len(keep)


def _reference(runs: list[dict], key: str):
    """What the method declares (MethodSpec), as its rows carry it; asked of the method itself
    for rows written before rows carried it."""
    if key in runs[0]:
        return runs[0][key]
    from tailorlm.errors import TailorError
    from tailorlm.methods import get_method

    try:
        return getattr(get_method(runs[0]["method"]), key)
    except TailorError:
        return None


def _api_usage(rows: list[dict]) -> list[dict]:
    """Per method run through an endpoint: its host, model and scoring tier, and the calls,
    cache hits, tokens and dollars of all its runs (models/remote.py)."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get("where") != "remote":
            continue
        m = out.setdefault(r["method"], {
            "method": r["method"], "host": r.get("endpoint_host"),
            "model": r.get("endpoint_model"), "tier": r.get("api_tier"),
            "notes": r.get("api_notes") or [], "calls": 0, "cache_hits": 0, "tokens": 0,
            "usd": 0.0, "latency_ms_p95": r.get("api_latency_ms_p95"),
            "unparsed_rate": r.get("unparsed_rate")})
        m["calls"] += r.get("api_calls") or 0
        m["cache_hits"] += r.get("api_cache_hits") or 0
        m["tokens"] += (r.get("api_prompt_tokens") or 0) + (r.get("api_completion_tokens") or 0)
        m["usd"] += r.get("api_usd") or 0.0
    return list(out.values())


def _kind(row: dict) -> str:
    return "classification" if row.get("metric") in ("accuracy", "macro_f1") else "generation"


def _mean(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _method(name: str, runs: list[dict]) -> dict | None:
    if not runs:
        return None
    scores = [r["score"] for r in runs]
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    sens = next((r["sensitivity"] for r in runs if r.get("sensitivity")), None)
    train_score = _mean(runs, "train_score")
    gap = None if train_score is None else train_score - float(np.mean(scores))
    out = {
        "method": name, "family": runs[0].get("family"), "side": runs[0].get("side"),
        "where": runs[0].get("where", "local"), "device": runs[0].get("device", "cpu"),
        "score_mean": float(np.mean(scores)), "score_std": std, "n_seeds": len(scores),
        "scores": scores, "score_cis": [r.get("score_ci") for r in runs],
        "n_train": runs[0].get("n_train"),
        "train_score": train_score, "overfit_gap": gap, "overfit_risk": _risk(gap, std,
                                                                              len(scores)),
        "sensitivity": sens, "val_score": _mean(runs, "val_score"),
        "n_fitted": runs[0].get("n_fitted"), "n_held_out": runs[0].get("n_held_out"),
        "n_test": runs[0].get("n_eval"),
        "zero_shot_reference": bool(_reference(runs, "zero_shot_reference")),
        "break_even_reference": _reference(runs, "break_even_reference") or 0,
    }
    for key in ("fit_seconds", "eval_seconds", "latency_ms_per_query", "prompt_tokens_per_query",
                "peak_rss_mb", "load_seconds", "latency_ms_p50", "latency_ms_p95",
                "api_usd_per_query"):
        out[key] = _mean(runs, key)
    for key in ("trainable_params", "total_params", "artifact_bytes", "optimizer_bytes",
                "train_tokens"):  # counts: the same or nearly so for every seed
        value = _mean(runs, key)
        out[key] = None if value is None else round(value)
    return out


def _risk(gap, std: float, n_seeds: int) -> str | None:
    if gap is None and n_seeds < 2:
        return None
    for level, (gap_limit, std_limit) in RISK.items():
        if (gap is not None and gap > gap_limit) or (n_seeds > 1 and std > std_limit):
            return level
    return "low"


def _cost(m: dict, prices: dict, qpd: float) -> dict:
    hour = prices["gpu_hour_usd"] if m.get("device") == "cuda" else prices["cpu_hour_usd"]
    per_second = hour / 3600
    fit = (m["fit_seconds"] or 0.0) * per_second
    # what the same prompts cost through a hosted API at its token prices (text prompts only)
    api = ((m["prompt_tokens_per_query"] or 0) * prices["api_usd_per_1m_input_tokens"]
           + ANSWER_TOKENS * prices["api_usd_per_1m_output_tokens"]) / 1e6
    if m.get("api_usd_per_query") is not None:  # run through an endpoint: its answers' usage
        api = m["api_usd_per_query"]
    per_query = api if m["where"] == "remote" else \
        (m["latency_ms_per_query"] or 0.0) / 1000 * per_second
    out = {"fit_usd": fit, "per_query_usd": per_query, "daily_usd": qpd * per_query,
           "monthly_usd": 30 * qpd * per_query, "first_month_usd": fit + 30 * qpd * per_query,
           "refit_usd": fit, "refit_seconds": m["fit_seconds"]}
    if m.get("family") == "prompt":
        out.update(api_per_query_usd=api, api_monthly_usd=30 * qpd * api)
    return out


def _break_even(m: dict, ref: dict) -> float | None:
    """Queries after which m's total cost (fit + queries) drops below the reference's."""
    if m is ref:
        return None
    d_fit = m["cost"]["fit_usd"] - ref["cost"]["fit_usd"]
    d_query = ref["cost"]["per_query_usd"] - m["cost"]["per_query_usd"]
    if d_fit <= 0:
        return 0.0 if d_query >= 0 else None
    return d_fit / d_query if d_query > 0 else None


def _curves(rows: list[dict], order: list[str]) -> dict:
    curves = {}
    for name in order:
        points: dict[int, list[dict]] = {}
        for r in rows:
            if r["method"] == name and r.get("k") is not None:
                points.setdefault(r["k"], []).append(r)
        if len(points) > 1:
            curves[name] = [{"k": k, "n_train": rs[0].get("n_train"),
                             "score": float(np.mean([r["score"] for r in rs])),
                             "n_seeds": len(rs)} for k, rs in sorted(points.items())]
    return curves


def _crossings(curves: dict) -> list[dict]:
    """Where one method's curve overtakes another's (log2-k interpolated)."""
    out = []
    names = list(curves)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa = {p["k"]: p["score"] for p in curves[a]}
            sb = {p["k"]: p["score"] for p in curves[b]}
            ks = sorted(set(sa) & set(sb))
            for k0, k1 in zip(ks, ks[1:]):
                d0, d1 = sb[k0] - sa[k0], sb[k1] - sa[k1]
                if d0 * d1 < 0:
                    t = d0 / (d0 - d1)
                    k = 2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0)))
                    winner, loser = (b, a) if d1 > 0 else (a, b)
                    out.append({"a": loser, "b": winner, "k": round(k, 1),
                                "text": f"{winner} overtakes {loser} between k={k0} and "
                                        f"k={k1} (about k={k:.0f})"})
    return out


def _pareto(methods: list[dict]) -> list[str]:
    """Methods no other beats on both quality (higher) and first-month cost (lower)."""
    def cost(m):
        return m["cost"]["first_month_usd"]
    front = []
    for m in methods:
        dominated = any(o is not m and o["score_mean"] >= m["score_mean"] and cost(o) <= cost(m)
                        and (o["score_mean"] > m["score_mean"] or cost(o) < cost(m))
                        for o in methods)
        if not dominated:
            front.append(m["method"])
    return sorted(front, key=lambda n: next(cost(m) for m in methods if m["method"] == n))


# -- files ------------------------------------------------------------------------------------

def read_run(out: str | Path) -> tuple[list[dict], dict, dict]:
    """(rows, resolved plan, run log) of a finished or interrupted comparison folder."""
    from tailorlm.compare.bakeoff import PLAN_FILE
    from tailorlm.errors import TailorError

    out = Path(out)
    rows = read_results(out)
    if not rows and (out / "errors.log").exists():
        raise TailorError(f"every run in {out} failed; the tracebacks are in {out / 'errors.log'} "
                          f"(rerun `tailor compare ... --out {out}` to retry them)")
    if not rows:
        raise TailorError(f"{out} holds no results.jsonl rows: run `tailor compare ... --out "
                          f"{out}` first")
    plan_path = out / PLAN_FILE
    plan = yaml.safe_load(plan_path.read_text(encoding="utf-8")) if plan_path.exists() else {}
    log_path = out / RUN_LOG
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.exists() else {}
    return rows, plan or {}, log


def write_reports(out: str | Path, constraints=None, *, skipped=None,
                  wall_seconds=None) -> dict:
    """Summarize OUT and (re)write report.json, report.md and report.html; returns the summary."""
    from tailorlm.compare.html import render_html
    from tailorlm.compare.report import markdown
    from tailorlm.methods.artifact import write_json_atomic

    out = Path(out)
    rows, plan, log = read_run(out)
    if skipped is not None or wall_seconds is not None:
        # a comparison continued with more budget took the time of every call
        calls = list(log.get("calls") or ([log["wall_seconds"]] if log.get("wall_seconds")
                                           else []))
        calls += [wall_seconds] if wall_seconds is not None else []
        log = {"skipped": list(skipped or []), "calls": calls,
               "wall_seconds": sum(calls) if calls else None}
        write_json_atomic(out / RUN_LOG, log)
    summary = summarize(rows, plan, constraints, skipped=log.get("skipped", []),
                        wall_seconds=log.get("wall_seconds"), calls=len(log.get("calls") or []),
                        records=read_test_rows(out), out=out)
    write_json_atomic(out / "report.json", summary)
    _write_text(out / "report.md", markdown(summary))
    _write_text(out / "report.html", render_html(summary))
    return summary


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
