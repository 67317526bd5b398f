"""The terminal table of a comparison: one row per run, quality and cost side by side."""

from __future__ import annotations

from tailorlm.compare.baselines import lines as baseline_lines
from tailorlm.compare.classes import confusion_text
from tailorlm.compare.tables import human_bytes, or_dash

COLUMNS = [  # (header, key, format)
    ("method", "method", "{}"), ("score", "score", "{:.3f}"), ("95% CI", "score_ci", None),
    ("fit s", "fit_seconds", "{:.1f}"), ("eval s", "eval_seconds", "{:.1f}"),
    ("ms/query", "latency_ms_per_query", "{:.0f}"),
    ("prompt tok", "prompt_tokens_per_query", "{:.0f}"),
    ("trainable", "trainable_params", "{:,}"), ("bytes", "artifact_bytes", "{:,}"),
    ("peak MB", "peak_rss_mb", "{:.0f}"),
]


def _cell(row: dict, key: str, fmt: str | None) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "score_ci":
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return fmt.format(value)


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no results)"
    cells = [[h for h, _, _ in COLUMNS]] + [[_cell(r, k, f) for _, k, f in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    metric = rows[0].get("metric", "")
    return f"{rows[0].get('task', '')} — {metric} on {rows[0].get('n_eval')} examples\n" + \
        "\n".join(lines)


# -- the summary (compare/summary.py) as text --------------------------------------------------

SUMMARY_COLUMNS = ["method", "score", "fit s", "ms/query", "prompt tok", "trainable", "size",
                   "sens. std", "overfit", "$/month"]


def summary_rows(summary: dict) -> list[list[str]]:
    out = []
    for m in summary["methods"]:
        sens = (m.get("sensitivity") or {}).get("std")
        out.append([
            m["method"], f"{m['score_mean']:.3f} ± {m['score_std']:.3f}",
            or_dash(m["fit_seconds"], "{:.0f}"), or_dash(m["latency_ms_per_query"], "{:.0f}"),
            or_dash(m["prompt_tokens_per_query"], "{:.0f}"),
            or_dash(m["trainable_params"], "{:,.0f}"),
            human_bytes(m["artifact_bytes"]), or_dash(sens, "{:.3f}"), m.get("overfit_risk") or "-",
            or_dash((m.get("cost") or {}).get("monthly_usd"), "{:.3f}")])
    return out


def summary_table(summary: dict) -> str:
    """What `tailor compare` and `tailor recommend` print."""
    cells = [SUMMARY_COLUMNS] + summary_rows(summary)
    widths = [max(len(r[i]) for r in cells) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (f"{summary['task']} — {summary['metric']} on {summary['n_test']} test rows, k="
            f"{summary['k']}, seeds {summary['seeds']}, {summary['model']}")
    return "\n".join([head, *lines, "", *recommendation_lines(summary), *api_lines(summary)])


def api_lines(summary: dict) -> list[str]:
    """What the methods run through an endpoint cost: tier, calls, cache hits, tokens, $."""
    out = []
    for a in summary.get("api") or []:
        unparsed = (f", {a['unparsed_rate']:.0%} of answers matched no label"
                    if a.get("unparsed_rate") is not None else "")
        out.append(f"API {a['method']}: {a['host']} {a['model']}, tier {a['tier']}: "
                   f"{a['calls']:,} calls, {a['cache_hits']:,} cache hits, {a['tokens']:,} "
                   f"tokens, ${a['usd']:.4f}{unparsed}")
    return out


def recommendation_lines(summary: dict) -> list[str]:
    rec = summary["recommendation"]
    lines = [constraints_line(rec)]
    if rec["method"] is None:
        return lines + ["No recommendation: " + "; ".join(rec["reasons"])]
    cautions = rec.get("flags") or []
    lines += [f"Recommended: {rec['method']}"] + [f"  - {r}" for r in rec["reasons"]
                                                   if r not in cautions]
    lines += [f"Caution: {f}" for f in cautions]
    if rec["runner_up"]:
        lines += [f"Runner-up: {rec['runner_up']}"] + [f"  - {r}"
                                                        for r in rec["runner_up_reasons"][:2]]
    lines += [f"Excluded: {m}: {why}" for m, why in rec["excluded"].items()]
    lines += [f"Baseline: {line}" for line in baseline_lines(summary)]
    lines += [f"Curves: {c['text']}" for c in summary["crossings"]]
    lines += [f"Data: {w}" for w in summary.get("data_warnings") or []]
    lines += [f"Budget: {g}" for g in summary.get("plan_gives_up") or []]
    if summary.get("rows_of_other_data"):
        lines.append(f"Left out: {summary['rows_of_other_data']} results rows of other data "
                     "(their data hashes differ from this plan's)")
    return lines


def constraints_line(rec: dict) -> str:
    """'Constraints: --api-only (rules out lora, full); --max-latency-ms 50 (rules out none)'."""
    applied = rec.get("constraints_applied") or []
    qpd = (rec.get("constraints") or {}).get("queries_per_day")
    volume = f"; {qpd:,.0f} queries/day" if qpd else ""
    if not applied:
        return f"Constraints: none{volume}"
    return "Constraints: " + "; ".join(
        f"{a['flag']} (rules out {', '.join(a['excludes']) or 'none'})" for a in applied) + volume


def wall_time(summary: dict) -> str:
    """'25.0 min', or '49.9 min over 2 calls' for a comparison continued with more budget."""
    calls = summary.get("calls") or 1
    return f"{summary['wall_seconds'] / 60:.1f} min" + (f" over {calls} calls" if calls > 1
                                                         else "")


def markdown(summary: dict) -> str:
    unit = "examples per class" if summary.get("kind") == "classification" else "examples"
    out = [f"# {summary['task']}: which way to adapt {summary['model']}?", "",
           f"{summary['metric']} on {summary['n_test']} test rows; k={summary['k']} {unit}; "
           f"seeds {summary['seeds']}" + (f"; wall time {wall_time(summary)}"
                                          if summary.get("wall_seconds") else "") + ".", "",
           "## Recommendation", ""]
    out += recommendation_lines(summary)
    out += ["", "## Results", "", _md_table(SUMMARY_COLUMNS, summary_rows(summary))]
    columns, rows = separability_rows(summary)
    if rows:
        rec = summary["recommendation"]
        out += ["", "## Is the best really better?", "",
                f"A paired bootstrap over the shared test rows (and seeds): a method ties "
                f"{rec['best']} unless {rec['best']} wins in at least "
                f"{rec.get('tie_level', 0.95):.0%} of the resamples (eval.tie_level).", "",
                _md_table(columns, rows)]
    out += ["", "## Baselines", ""] + [f"- {line}" for line in baseline_lines(summary)]
    out += ["", "## Fitted, held out and tested", "",
            "The train score is measured on the rows each method was fitted on (not the rows it "
            "held out); the validation score on the rows it held out or the given validation "
            "set.", "", _md_table(FIT_COLUMNS, fit_rows(summary))]
    classes = summary.get("classes")
    if classes:
        out += ["", f"## Per class: {classes['method']}", "",
                _md_table(["label", "precision", "recall", "F1", "support", "predicted"],
                          [[c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}",
                            f"{c['f1']:.3f}", c["support"], c["predicted"]]
                           for c in classes["per_class"]]),
                "", "```", *confusion_text(classes), "```"]
        if classes.get("wrong"):
            out += ["", "Wrong answers (the first few):", ""] + [
                f"- {w['input'][:160]!r}: gold {w['gold']}, predicted {w['predicted']}"
                for w in classes["wrong"]]
    out += ["", *api_lines(summary)] if summary.get("api") else []
    for key, title in (("key_differences", "Key differences, measured"),
                       ("cost_performance", "Cost and performance considerations, measured")):
        table = summary["tables"][key]
        out += ["", f"## {title}", "", _md_table(table["columns"], table["rows"])]
        out += ["", table["note"]] if table.get("note") else []
    if summary["curves"]:
        ks = sorted({p["k"] for c in summary["curves"].values() for p in c})
        rows = [[name] + [next((f"{p['score']:.3f}" for p in c if p["k"] == k), "-")
                          for k in ks] for name, c in summary["curves"].items()]
        out += ["", "## Data efficiency (seed 0 beyond the main k)", "",
                _md_table(["method"] + [f"k={k}" for k in ks], rows)]
    out += ["", f"## Serving cost at {summary['queries_per_day']:,.0f} queries/day", "",
            _md_table(["method", "fit (one-off)", "per query", "per month (this machine)",
                       "per month via an API",
                       f"cheaper than {summary.get('break_even_reference') or '-'} after"],
                      [_cost_row(m) for m in summary["methods"]])]
    prices = summary["prices"]
    out += ["", "## Prices assumed", "", ", ".join(f"{k} {v:g}" for k, v in prices.items())
            + f"; {summary['queries_per_day']:,.0f} queries/day."]
    if summary["skipped"]:
        out += ["", "## Skipped", ""] + [f"- {s['run']}: {s['reason']}"
                                         for s in summary["skipped"]]
    return "\n".join(out) + "\n"


def separability_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Each method against the best: the difference, its interval, how often the best won."""
    rec = summary.get("recommendation") or {}
    level = rec.get("tie_level") or 0.95
    columns = [f"behind {rec.get('best')}", f"{2 * level - 1:.0%} interval",
               "best wins in", "rows x seeds", "verdict"]
    rows = []
    for name, c in (rec.get("vs_best") or {}).items():
        if c.get("paired"):
            rows.append([name, f"{c['diff']:.3f}", f"{c['low']:.3f} to {c['high']:.3f}",
                         f"{c['p_a_wins']:.0%}",
                         f"{c['n_rows']:,} x {c['n_seeds'][0]}/{c['n_seeds'][1]}",
                         "tied" if c["tied"] else "separable"])
        else:
            rows.append([name, f"{c['diff']:.3f}", "-", "-", "-",
                         ("tied" if c["tied"] else "separable") + " (by the best's interval)"])
    return ["method"] + columns, rows


FIT_COLUMNS = ["method", "rows fitted", "held out", "train score", "validation score",
               "test score", "train-test gap"]


def fit_rows(summary: dict) -> list[list[str]]:
    return [[m["method"], or_dash(m.get("n_fitted"), "{:,}"), or_dash(m.get("n_held_out"), "{:,}"),
             or_dash(m.get("train_score"), "{:.3f}"), or_dash(m.get("val_score"), "{:.3f}"),
             or_dash(m.get("score_mean"), "{:.3f}")
             + (" (below majority)" if m.get("below_majority") else ""),
             or_dash(m.get("overfit_gap"), "{:+.3f}")] for m in summary["methods"]]


def _cost_row(m: dict) -> list[str]:
    c = m.get("cost") or {}
    be = m.get("break_even_queries")
    return [m["method"], or_dash(c.get("fit_usd"), "${:.4f}"),
            or_dash(c.get("per_query_usd"), "${:.2e}"),
            or_dash(c.get("monthly_usd"), "${:.2f}"), or_dash(c.get("api_monthly_usd"), "${:.2f}"),
            "-" if be is None else f"{be:,.0f} queries"]


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def esc(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

