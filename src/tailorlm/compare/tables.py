"""The two tables people ask "prompt tuning or fine tuning?" with, filled with this run's numbers.

"Key Differences" usually reads: model parameters unchanged vs updated; a few examples vs
thousands; low vs high compute; flexible vs specialised. "Cost and Performance Considerations":
setup cost, ongoing maintenance, computational resources, performance gain, risk (overfitting).
Here every cell is a measurement from the summary, so the adjectives become numbers on the user's
data; a cell that was not measured says so.
"""

from __future__ import annotations

WHAT_CHANGES = {"prompt": "the text around the input", "soft prompt": "learned vectors before "
                "the input (model frozen)", "fine tuning": "the model's weights",
                "hybrid": "weights, plus prompts/vectors per task or client"}


def key_differences(summary: dict) -> dict:
    methods = summary["methods"]
    rows = [
        ["what changes"] + [WHAT_CHANGES.get(m["family"], "-") for m in methods],
        ["trainable parameters"] + [_params(m) for m in methods],
        ["examples used"] + [_examples(m, summary) for m in methods],
        ["fit time (one-off)"] + [_seconds(m["fit_seconds"]) for m in methods],
        ["inference: prompt tokens, time per query"] + [
            f"{or_dash(m['prompt_tokens_per_query'], '{:.0f}')} tok, "
            f"{or_dash(m['latency_ms_per_query'], '{:.0f}')} ms" for m in methods],
        ["wording sensitivity (std / range)"] + [_sensitivity(m) for m in methods],
        [f"quality ({summary['metric']}, mean ± std)"] + [
            f"{m['score_mean']:.3f} ± {m['score_std']:.3f}" for m in methods],
    ]
    return {"columns": ["aspect"] + [m["method"] for m in methods], "rows": rows}


def cost_performance(summary: dict) -> dict:
    columns = ["method", "setup cost", "ongoing maintenance (refit on a new base model)",
               "computational resources", "performance gain over zero-shot",
               "risk: overfitting", "rollback size and time"]
    rows = []
    for m in summary["methods"]:
        cost = m.get("cost") or {}
        gain = m.get("gain_over_zero_shot")
        rows.append([
            m["method"],
            f"{_seconds(m['fit_seconds'])} (${cost.get('fit_usd', 0):.4f})",
            f"{_seconds(cost.get('refit_seconds'))} (${cost.get('refit_usd', 0):.4f}) per refit",
            f"peak {or_dash(m['peak_rss_mb'], '{:,.0f}')} MB; {_params(m)} trained"
            + (f"; optimizer {m['optimizer_bytes'] / 1e6:,.1f} MB" if m.get("optimizer_bytes")
               else ""),
            "-" if gain is None else f"{100 * gain:+.1f} points",
            _overfit(m),
            f"{human_bytes(m['artifact_bytes'])}, "
            f"loads in {or_dash(m['load_seconds'], '{:.2f}')} s",
        ])
    return {"columns": columns, "rows": rows, "note": PEAK_NOTE}


PEAK_NOTE = ("Peak memory is each run's own: the process's peak resident memory during the run "
             "minus what it held when the run began (the base model, and whatever earlier runs "
             "left, are not counted).")


def _params(m: dict) -> str:
    n, total = m.get("trainable_params"), m.get("total_params")
    if not n:
        return "0"
    return f"{n:,.0f}" + (f" ({100 * n / total:.3g}%)" if total else "")


def _examples(m: dict, summary: dict) -> str:
    text = f"{or_dash(m.get('n_train'), '{:.0f}')} at k={summary['k']}"
    curve = summary["curves"].get(m["method"])
    if curve:
        best = max(p["score"] for p in curve)
        enough = next(p for p in curve if p["score"] >= 0.9 * best)
        text += f"; 90% of its best from k={enough['k']}"
    return text


def _sensitivity(m: dict) -> str:
    s = m.get("sensitivity") or {}
    if s.get("std") is None:
        return "not measured"
    return f"{s['std']:.3f} / {s['range']:.3f} ({s['n_variants']} variants)"


def _overfit(m: dict) -> str:
    parts = []
    if m.get("overfit_gap") is not None:
        parts.append(f"train-test gap {m['overfit_gap']:+.3f}")
    if m.get("n_seeds", 0) > 1:
        parts.append(f"seed std {m['score_std']:.3f}")
    return f"{m.get('overfit_risk') or 'not measured'}" + (
        f" ({', '.join(parts)})" if parts else "")


def _seconds(s) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def or_dash(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
