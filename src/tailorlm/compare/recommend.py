"""The recommendation: one method and a runner-up, with reasons, under the user's constraints.

The rules, in order (each is a line of code below, and tested on hand-made results):

  1. Drop what the constraints forbid, saying why:
       --api-only          only text prompts (family "prompt"): soft prompts, prefixes and new
                           weights need the model itself
       --sensitive-data    nothing that sends data to a remote endpoint (where == "remote")
       --max-train-minutes fit time;  --max-latency-ms  time per query;
       --max-memory-mb     peak memory;  --max-monthly-usd  fit + 30 days at the query volume
  2. Quality first: the best mean score, and every method the data cannot separate from it,
     count as tied. Separable means the best wins in at least `level` (eval.tie_level, 0.95) of
     the paired bootstrap's resamples of the shared test rows and the seeds
     (compare/significance.py). Results without per-row outcomes (older files) fall back to
     the best's own bootstrap interval: a method whose mean is inside it ties.
  3. Among the tied, the cheapest over the first month at --queries-per-day (fit + 30 days of
     queries) wins: at low volume the one-off fit dominates (prompts win), at high volume the
     per-query cost does (short prompts of tuned models win: T-Few's argument). Then lower prompt
     sensitivity, then fewer trainable parameters.
  4. The runner-up is the next in that order (the tied first, then the others by score).
  5. Flags, in words: a winner measured on one seed; a winner the data cannot separate from the
     other of the top two ("run with more test rows or seeds"); a winner below the
     majority-class baseline. They end the reasons too; reports show them as cautions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from tailorlm.compare.significance import DEFAULT_LEVEL, as_dict, describe, not_separable
from tailorlm.compare.tables import human_bytes

MIN_MARGIN = 0.01  # without per-row outcomes or intervals: closer than this is a tie


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
    latency = m.get("latency_ms_p95") or m.get("latency_ms_per_query")  # p95 where measured
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


def applied(methods: list[dict], c: Constraints) -> list[dict]:
    """Each constraint that is set, as its flag, and the methods it alone rules out."""
    out = []
    for f in fields(Constraints):
        value = getattr(c, f.name)
        if value is None or value is False or f.name == "queries_per_day":
            continue
        alone = replace(Constraints(), **{f.name: value})
        flag = "--" + f.name.replace("_", "-") + ("" if value is True else f" {value:g}")
        out.append({"flag": flag, "excludes": [m["method"] for m in methods
                                               if exclusion(m, alone)]})
    return out


def compare_with_best(methods: list[dict], best: dict, significance=None,
                      level: float = DEFAULT_LEVEL) -> dict[str, dict]:
    """{method: how it compares with the best, and whether it ties} for every other method."""
    out = {}
    for m in methods:
        if m is best:
            continue
        result = significance.compare(best["method"], m["method"]) if significance else None
        if result is not None:
            out[m["method"]] = {**as_dict(result, tied=result.p_a_wins < level), "paired": True}
        else:
            out[m["method"]] = _interval_rule(m, best, level)
    return out


def _interval_rule(m: dict, best: dict, level: float) -> dict:
    """No per-row outcomes: tied when m's mean is inside the best's bootstrap interval (the
    mean of its runs' intervals), else within MIN_MARGIN."""
    cis = [ci for ci in best.get("score_cis") or [] if ci]
    low = sum(ci[0] for ci in cis) / len(cis) if cis else best["score_mean"] - MIN_MARGIN
    return {"paired": False, "diff": best["score_mean"] - m["score_mean"], "low": None,
            "high": None, "best_low": low, "tied": m["score_mean"] >= low, "level": level,
            "n_rows": m.get("n_test"), "n_seeds": [best.get("n_seeds"), m.get("n_seeds")]}


def ranking(methods: list[dict], vs_best: dict[str, dict] | None = None) -> list[dict]:
    """Rules 2-4: the tied-with-best by cost, sensitivity and size; then the rest by score."""
    if not methods:
        return []
    best = max(methods, key=lambda m: m["score_mean"])
    vs_best = vs_best if vs_best is not None else compare_with_best(methods, best)

    def tied(m):
        return m is best or vs_best[m["method"]]["tied"]

    def spread(m):
        s = m.get("sensitivity") or {}
        return s.get("std") if s.get("std") is not None else math.inf

    top = sorted((m for m in methods if tied(m)),
                 key=lambda m: (first_month(m), spread(m), m.get("trainable_params") or 0))
    rest = sorted((m for m in methods if not tied(m)), key=lambda m: -m["score_mean"])
    return top + rest


def recommend(methods: list[dict], constraints: Constraints, significance=None,
              level: float = DEFAULT_LEVEL) -> dict:
    excluded = {m["method"]: why for m in methods if (why := exclusion(m, constraints))}
    allowed = [m for m in methods if m["method"] not in excluded]
    out = {"method": None, "reasons": [], "runner_up": None, "runner_up_reasons": [],
           "flags": [], "best": None, "vs_best": {}, "tie_level": level,
           "excluded": excluded, "constraints": asdict(constraints),
           "constraints_applied": applied(methods, constraints)}
    if not allowed:
        out["reasons"] = ["no method meets the constraints: " + "; ".join(
            f"{k}: {v}" for k, v in excluded.items())]
        return out
    best = max(allowed, key=lambda m: m["score_mean"])
    vs_best = compare_with_best(allowed, best, significance, level)
    order = ranking(allowed, vs_best)
    cautions = flags(order[0], best, allowed, vs_best)
    out.update(method=order[0]["method"], best=best["method"], vs_best=vs_best, flags=cautions,
               reasons=reasons(order[0], best, order, constraints, vs_best) + cautions)
    if len(order) > 1:
        out["runner_up"] = order[1]["method"]
        out["runner_up_reasons"] = reasons(order[1], best, order, constraints, vs_best)
    return out


def flags(winner: dict, best: dict, methods: list[dict], vs_best: dict[str, dict]) -> list[str]:
    """What a user must know before trusting the answer, in words."""
    out = []
    name = winner["method"]
    if winner.get("n_seeds") == 1:
        out.append(f"{name} was measured on one seed: how far its score moves with another "
                   "seed is not known; run with more seeds")
    if winner is best:
        others = [m for m in methods if m is not best]
        other = max(others, key=lambda m: m["score_mean"]) if others else None
    else:
        other = best
    if other is not None:
        c = vs_best[other["method"] if winner is best else name]
        if c["tied"]:
            out.append(not_separable(name, other["method"], best["method"], c) if c["paired"]
                       else f"{name} is not separable from {other['method']}: they are "
                       f"{abs(c['diff']):.3f} apart, inside the best's bootstrap interval "
                       "(per-row outcomes were not kept, so no paired test); run with more "
                       "test rows or seeds")
    if winner.get("below_majority"):
        out.append(f"{name} scores below the majority-class baseline "
                   f"({winner['score_mean']:.3f} < {winner['majority_score']:.3f}): it has "
                   "learned less than always answering the most frequent label")
    return out


def _seeds(m: dict) -> str:
    return (f"score {m['score_mean']:.3f} ± {m['score_std']:.3f} over {m['n_seeds']} seeds"
            if m["n_seeds"] > 1 else f"score {m['score_mean']:.3f} (1 seed: spread not measured)")


def reasons(m: dict, best: dict, order: list[dict], c: Constraints,
            vs_best: dict[str, dict]) -> list[str]:
    score = _seeds(m)
    if m is best:
        score += " (the best)"
    else:
        cmp = vs_best[m["method"]]
        if cmp["paired"]:
            score += ", " + describe(best["method"], m["method"], cmp)
            score += ": not separable from it" if cmp["tied"] else ": separable, behind"
        else:
            score += (f", {cmp['diff']:.3f} behind {best['method']}"
                      + (" (within its interval: tied)" if cmp["tied"] else ""))
    out = [score]
    if m is best:
        tied = [o for o in order if o is not m and vs_best[o["method"]]["tied"]]
        if tied:
            out.append("could not be told apart from it: " + "; ".join(
                f"{o['method']} " + (describe(m["method"], o["method"], vs_best[o["method"]])
                                     if vs_best[o["method"]]["paired"]
                                     else f"{vs_best[o['method']]['diff']:.3f} behind")
                for o in tied))
    cost = m.get("cost") or {}
    qpd = c.queries_per_day
    if cost:
        out.append(f"first month at {qpd or 0:,.0f} queries/day: ${first_month(m):.4f} "
                   f"(fit ${cost.get('fit_usd', 0):.4f} once, ${cost.get('per_query_usd', 0):.2e}"
                   " per query)")
    if m is order[0] and m is not best:
        out.append(f"chosen over {best['method']}, which the data cannot separate from it, "
                   "because it costs less at this volume")
    beaten = [o["method"] for o in order if o is not m and first_month(o) > first_month(m)
              and o["score_mean"] <= m["score_mean"]]
    if beaten and m is order[0]:
        out.append("as good or better than " + ", ".join(beaten) + ", and cheaper at this volume")
    gain = m.get("gain_over_zero_shot")
    if gain is not None and not m.get("zero_shot_reference"):
        out.append(f"{100 * abs(gain):.1f} points {'above' if gain >= 0 else 'below'} zero-shot")
    if m.get("below_majority"):
        out.append(f"below the majority-class baseline ({m['majority_score']:.3f})")
    sens = m.get("sensitivity") or {}
    if sens.get("std") is not None:
        out.append(f"wording sensitivity: std {sens['std']:.3f}, range {sens['range']:.3f} over "
                   f"{sens['n_variants']} variants")
    if m.get("overfit_risk"):
        gap, val = m.get("overfit_gap"), m.get("val_score")
        out.append(f"overfitting risk {m['overfit_risk']}"
                   + (f" (train-test gap {gap:+.3f}" if gap is not None else "")
                   + (f", validation {val:.3f}" if gap is not None and val is not None else "")
                   + (")" if gap is not None else ""))
    fit = m.get("fit_seconds") or 0
    out.append(f"fit {fit:.0f} s, {m.get('latency_ms_per_query') or 0:.0f} ms/query, "
               f"{human_bytes(m.get('artifact_bytes'))} to keep and roll back")
    return out
