"""The recommendation: one method and a runner-up, with reasons, under the user's constraints.

The rules, in order (each is a line of code below, and tested on hand-made results):

  1. Drop what the constraints forbid, saying why:
       --api-only          only text prompts (family "prompt"): soft prompts, prefixes and new
                           weights need the model itself
       --sensitive-data    nothing that sends data to a remote endpoint (where == "remote")
       --max-train-minutes fit time;  --max-latency-ms  time per query;
       --max-memory-mb     peak memory;  --max-monthly-usd  fit + 30 days at the query volume
  2. Quality first: the best mean score, and every method within the best's noise
     (mean >= best - max(MIN_MARGIN, std of the best over seeds)) count as tied.
  3. Among the tied, the cheapest over the first month at --queries-per-day (fit + 30 days of
     queries) wins: at low volume the one-off fit dominates (prompts win), at high volume the
     per-query cost does (short prompts of tuned models win: T-Few's argument). Then lower prompt
     sensitivity, then fewer trainable parameters.
  4. The runner-up is the next in that order (the tied first, then the others by score).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tailorlm.compare.tables import human_bytes

MIN_MARGIN = 0.01  # two scores closer than this are a tie whatever the seeds say


@dataclass
class Constraints:
    api_only: bool = False
    sensitive_data: bool = False
    max_train_minutes: float | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    max_monthly_usd: float | None = None
    queries_per_day: float | None = None


def exclusion(m: dict, c: Constraints) -> str | None:
    """Why the constraints rule m out, or None."""
    if c.api_only and m.get("family") != "prompt":
        return (f"--api-only: {m['method']} needs the model's weights or embeddings; only text "
                "prompts work through an API")
    if c.sensitive_data and m.get("where") == "remote":
        return "--sensitive-data: it sends the data to a remote endpoint"
    fit_min = (m.get("fit_seconds") or 0) / 60
    if c.max_train_minutes is not None and fit_min > c.max_train_minutes:
        return f"fit took {fit_min:.1f} min > --max-train-minutes {c.max_train_minutes:g}"
    latency = m.get("latency_ms_per_query")
    if c.max_latency_ms is not None and latency is not None and latency > c.max_latency_ms:
        return f"{latency:.0f} ms per query > --max-latency-ms {c.max_latency_ms:g}"
    memory = m.get("peak_rss_mb")
    if c.max_memory_mb is not None and memory is not None and memory > c.max_memory_mb:
        return f"peak memory {memory:.0f} MB > --max-memory-mb {c.max_memory_mb:g}"
    if c.max_monthly_usd is not None and first_month(m) > c.max_monthly_usd:
        return f"first month ${first_month(m):.2f} > --max-monthly-usd {c.max_monthly_usd:g}"
    return None


def first_month(m: dict) -> float:
    cost = m.get("cost") or {}
    return (cost.get("fit_usd") or 0.0) + (cost.get("monthly_usd") or 0.0)


def ranking(methods: list[dict]) -> list[dict]:
    """Rules 2-4: the tied-with-best by cost, sensitivity and size; then the rest by score."""
    if not methods:
        return []
    best = max(methods, key=lambda m: m["score_mean"])

    def tied(m):
        return is_tied(m, best)

    def spread(m):
        s = m.get("sensitivity") or {}
        return s.get("std") if s.get("std") is not None else math.inf

    top = sorted((m for m in methods if tied(m)),
                 key=lambda m: (first_month(m), spread(m), m.get("trainable_params") or 0))
    rest = sorted((m for m in methods if not tied(m)), key=lambda m: -m["score_mean"])
    return top + rest


def recommend(methods: list[dict], constraints: Constraints) -> dict:
    excluded = {m["method"]: why for m in methods if (why := exclusion(m, constraints))}
    order = ranking([m for m in methods if m["method"] not in excluded])
    out = {"method": None, "reasons": [], "runner_up": None, "runner_up_reasons": [],
           "excluded": excluded, "constraints": asdict(constraints)}
    if not order:
        out["reasons"] = ["no method meets the constraints: " + "; ".join(
            f"{k}: {v}" for k, v in excluded.items())]
        return out
    best = max(order, key=lambda m: m["score_mean"])
    out["method"] = order[0]["method"]
    out["reasons"] = reasons(order[0], best, order, constraints)
    if len(order) > 1:
        out["runner_up"] = order[1]["method"]
        out["runner_up_reasons"] = reasons(order[1], best, order, constraints)
    return out


def is_tied(m: dict, best: dict) -> bool:
    """Within the best's own noise: how far the best moves between seeds (a candidate's own
    spread does not widen the band, or the least stable method would tie most easily)."""
    return m["score_mean"] >= best["score_mean"] - max(MIN_MARGIN, best["score_std"] or 0)


def reasons(m: dict, best: dict, order: list[dict], c: Constraints) -> list[str]:
    score = (f"score {m['score_mean']:.3f} ± {m['score_std']:.3f} over {m['n_seeds']} seeds"
             if m["n_seeds"] > 1 else f"score {m['score_mean']:.3f} (1 seed: spread not measured)")
    if m is best:
        score += " (the best)"
    else:
        behind = best["score_mean"] - m["score_mean"]
        score += f", {behind:.3f} behind {best['method']}"
        score += " (within noise)" if is_tied(m, best) else ""
    out = [score]
    cost = m.get("cost") or {}
    qpd = c.queries_per_day
    if cost:
        out.append(f"first month at {qpd or 0:,.0f} queries/day: ${first_month(m):.4f} "
                   f"(fit ${cost.get('fit_usd', 0):.4f} once, ${cost.get('per_query_usd', 0):.2e}"
                   " per query)")
    beaten = [o["method"] for o in order if o is not m and first_month(o) > first_month(m)
              and o["score_mean"] <= m["score_mean"]]
    if beaten and m is order[0]:
        out.append("as good or better than " + ", ".join(beaten) + ", and cheaper at this volume")
    gain = m.get("gain_over_zero_shot")
    if gain is not None and m["method"] != "prompt_template":
        out.append(f"{100 * abs(gain):.1f} points {'above' if gain >= 0 else 'below'} zero-shot")
    sens = m.get("sensitivity") or {}
    if sens.get("std") is not None:
        out.append(f"wording sensitivity: std {sens['std']:.3f}, range {sens['range']:.3f} over "
                   f"{sens['n_variants']} variants")
    if m.get("overfit_risk"):
        gap = m.get("overfit_gap")
        out.append(f"overfitting risk {m['overfit_risk']}"
                   + (f" (train-test gap {gap:+.3f})" if gap is not None else ""))
    fit = m.get("fit_seconds") or 0
    out.append(f"fit {fit:.0f} s, {m.get('latency_ms_per_query') or 0:.0f} ms/query, "
               f"{human_bytes(m.get('artifact_bytes'))} to keep and roll back")
    return out
