"""Can the data tell two methods apart? The paired bootstrap (engine/metrics.py) on results.jsonl.

Every method of a comparison is scored on the same test rows, and each results row keeps its
per-row outcome (`per_row`: predicted label indices, or generation's per-row metric values); the
gold labels are kept once per test set (the `test_rows` record). From those alone, with no model:

    outcome of a method = an (S, N) matrix: one row per seed, one column per test row
                          accuracy: 1 where the prediction is the gold; macro_f1: the predicted
                          label ids (scored against the gold ids); generation: the metric per row
    compare(best, m)    = paired_bootstrap(best, m): rows resampled together, seeds redrawn

A method ties the best unless the best wins in at least `level` of the resamples (plan key
`eval.tie_level`, default 0.95). `rows_to_separate` says roughly how many test rows a difference
of the size observed would need: the resampled difference's spread shrinks as 1/sqrt(rows).
"""

from __future__ import annotations

from dataclasses import asdict
from statistics import NormalDist

import numpy as np

from tailorlm.engine.metrics import PairedResult, get_metric, observed_score, \
    paired_from_resampled, resampled_scores, row_resamples

DEFAULT_LEVEL = 0.95
N_RESAMPLES = 2000


class Significance:
    """Per-method outcomes on one set of test rows, and the paired comparisons between them."""

    def __init__(self, outcomes: dict[str, np.ndarray], gold_ids: np.ndarray | None = None,
                 level: float = DEFAULT_LEVEL, n_resamples: int = N_RESAMPLES):
        self.outcomes, self.gold_ids = outcomes, gold_ids
        self.level, self.n_resamples = level, n_resamples
        self._resampled: dict[str, tuple[np.ndarray, float]] = {}
        self._rows: dict[int, list[np.ndarray]] = {}  # the row resamples of N rows, drawn once

    def knows(self, method: str) -> bool:
        return method in self.outcomes

    def _scores(self, method: str) -> tuple[np.ndarray, float]:
        """(its (S, R) resampled scores, its observed score): once per method, since every
        method is resampled on the same rows."""
        if method not in self._resampled:
            outcome = self.outcomes[method]
            n = outcome.shape[1]
            if n not in self._rows:
                self._rows[n] = row_resamples(n, self.n_resamples)
            self._resampled[method] = (
                resampled_scores(outcome, gold_ids=self.gold_ids, resamples=self._rows[n]),
                observed_score(outcome, gold_ids=self.gold_ids))
        return self._resampled[method]

    def compare(self, a: str, b: str) -> PairedResult | None:
        """score(a) - score(b) under the paired bootstrap; None where either lacks outcomes."""
        if not (self.knows(a) and self.knows(b)):
            return None
        (fa, oa), (fb, ob) = self._scores(a), self._scores(b)
        return paired_from_resampled(fa, fb, oa, ob, n_rows=self.outcomes[a].shape[1],
                                     level=self.level)

    @classmethod
    def from_rows(cls, rows: list[dict], record: dict | None, metric: str,
                  level: float = DEFAULT_LEVEL) -> Significance:
        """From the main rows of one test set (any order) and that test set's record."""
        by_method: dict[str, list[tuple[int, list]]] = {}
        golds = np.array(record["golds"]) if record and "golds" in record else None
        macro = get_metric(metric).per_example is None
        test = (record or {}).get("test_sha256")
        for r in rows:
            if test and r.get("test_sha256") not in (None, test):
                continue  # scored on other rows: nothing to pair with
            per_row = r.get("per_row") or {}
            if "values" in per_row:
                values = np.asarray(per_row["values"], dtype=float)
            elif "pred" in per_row and golds is not None and len(per_row["pred"]) == len(golds):
                pred = np.asarray(per_row["pred"])
                values = pred if macro else (pred == golds).astype(float)
            else:
                continue
            by_method.setdefault(r["method"], []).append((r.get("seed", 0), values))
        outcomes = {}
        for name, runs in by_method.items():
            lengths = {len(v) for _, v in runs}
            if len(lengths) == 1:
                outcomes[name] = np.stack([v for _, v in sorted(runs, key=lambda x: x[0])])
        return cls(outcomes, golds if macro else None, level)


def rows_to_separate(result: PairedResult) -> int | None:
    """About how many test rows would separate a difference this size at this level (None when
    the observed difference is not positive: no number of rows separates a tie)."""
    if result.diff <= 0 or result.std <= 0:
        return None
    z = NormalDist().inv_cdf(result.level)
    return int(np.ceil(result.n_rows * (z * result.std / result.diff) ** 2))


def as_dict(result: PairedResult, tied: bool) -> dict:
    out = asdict(result)
    out["n_seeds"] = list(result.n_seeds)
    out.update(tied=tied, rows_to_separate=rows_to_separate(result))
    return out


def describe(best: str, other: str, c: dict) -> str:
    """'0.012 behind lora (90% interval of the difference -0.010 to 0.034; lora better in 71%
    of 2,000 resamples of 50 rows, seeds 3 and 1; 95% needed)'."""
    width = 2 * c["level"] - 1
    seeds = c["n_seeds"]
    seeds_text = f"{seeds[0]} seed" + ("s" if seeds[0] > 1 else "") if seeds[0] == seeds[1] \
        else f"{seeds[0]} and {seeds[1]} seeds"
    return (f"{c['diff']:.3f} behind {best} ({width:.0%} interval of the difference "
            f"{c['low']:.3f} to {c['high']:.3f}; {best} better in {c['p_a_wins']:.0%} of "
            f"{c['n_resamples']:,} resamples of {c['n_rows']:,} rows, {seeds_text}; "
            f"{c['level']:.0%} needed)")


def not_separable(winner: str, other: str, best: str, c: dict) -> str:
    """The warning a user reads when the data cannot tell the winner from another method; `c`
    compares the best with the other of the two."""
    if c["diff"] == c["low"] == c["high"] == 0:
        return (f"{winner} and {other} score the same on every resample of the "
                f"{c['n_rows']:,} test rows: nothing here separates them; run with more test "
                "rows or seeds")
    need = c.get("rows_to_separate")
    more = (f"; a difference this size needs about {need:,} rows" if need and need > c["n_rows"]
            else "")
    return (f"{winner} is not separable from {other} on {c['n_rows']:,} test rows ({best} ahead "
            f"by {c['diff']:.3f}, {2 * c['level'] - 1:.0%} interval {c['low']:.3f} to "
            f"{c['high']:.3f}){more}: run with more test rows or seeds")
