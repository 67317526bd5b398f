"""A comparison's adapters in the registry: `tailor compare --register NAME`, and the provenance
of any folder pushed from a comparison's OUT/adapters/.

    OUT/report.json      the recommendation (a method)
    OUT/results.jsonl    one row per run: its score, costs, seed, k, config, and `adapter` folder
    OUT/plan.yaml        the plan as resolved: where the data is, how many test rows

`register_comparison(out, name)` pushes the recommended method's run (its best seed at the
plan's k) as NAME:N with alias "candidate". A folder pushed from OUT/adapters/ gets the same
lineage: the comparison, that run's metrics and costs, the plan. When the plan's data files can
still be read, the rows the run was fitted on (the seeded k-per-class sample, checked against the
card's train_sha256) and the test rows it was scored on are stored with the version, so
`tailor upgrade` can re-run it without them.

This module reads a comparison's files; it runs nothing. Re-reading the data uses compare's own
loader (imported when needed), so the rows are exactly those the runs saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tailorlm.errors import TailorError
from tailorlm.registry.lineage import COMPARISON_COSTS, data_of

RESULTS, REPORT, PLAN = "results.jsonl", "report.json", "plan.yaml"


def read_rows(out: Path) -> list[dict]:
    rows = []
    for line in (out / RESULTS).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a crash: not a finished run
            continue
    return [r for r in rows if not r.get("skipped")]


def recommended_run(out: str | Path) -> dict:
    """The results row of the recommended method: its best-scoring seed at the plan's k."""
    out = Path(out)
    if not (out / REPORT).is_file() or not (out / RESULTS).is_file():
        raise TailorError(f"{out} holds no finished comparison (no {REPORT} or {RESULTS}); run "
                          f"`tailor compare --out {out}` first")
    report = json.loads((out / REPORT).read_text(encoding="utf-8"))
    method = (report.get("recommendation") or {}).get("method")
    if not method:
        raise TailorError(f"{out}: the comparison recommends no method (every one was excluded"
                          f" by the constraints); push an adapter folder instead")
    rows = [r for r in read_rows(out) if r.get("method") == method and r.get("adapter")
            and r.get("role", "main") == "main"]
    if not rows:
        raise TailorError(f"{out}/{RESULTS} has no finished run of {method} with an adapter")
    return max(rows, key=lambda r: (r.get("score", 0.0), -r.get("seed", 0)))


def register_comparison(out: str | Path, name: str, *, registry=None, alias: str = "candidate",
                        reason: str = ""):
    """Push the recommended adapter of the comparison in OUT as the next version of NAME."""
    from tailorlm.registry.names import check_alias, check_name
    from tailorlm.registry.registry import Registry

    check_name(name)
    check_alias(alias)
    out = Path(out)
    row = recommended_run(out)
    folder = out / "adapters" / Path(row["adapter"]).name
    if not folder.is_dir():
        raise TailorError(f"{folder} (the recommended run's adapter) is missing")
    reg = registry or Registry()
    return reg.push(folder, name, alias=alias,
                    reason=reason or f"recommended by the comparison in {out}")


def comparison_of(folder: Path, card: dict) -> tuple[dict | None, dict | None]:
    """(comparison lineage, {"train": Task, "test": Task} or None) of a folder in OUT/adapters/;
    (None, None) for a folder from anywhere else."""
    out = folder.resolve().parent.parent
    if folder.resolve().parent.name != "adapters" or not (out / RESULTS).is_file():
        return None, None
    rows = [r for r in read_rows(out) if r.get("adapter")
            and Path(r["adapter"]).name == folder.resolve().name]
    if not rows:
        return None, None
    row = rows[-1]
    plan = yaml.safe_load((out / PLAN).read_text(encoding="utf-8")) if (out / PLAN).is_file() \
        else None
    recommended = None
    if (out / REPORT).is_file():
        report = json.loads((out / REPORT).read_text(encoding="utf-8"))
        recommended = (report.get("recommendation") or {}).get("method") == row["method"]
    comparison = {"out": str(out), "run_key": row.get("run_key"), "method": row["method"],
                  "metric": row.get("metric"), "score": row.get("score"),
                  "score_ci": row.get("score_ci"), "n_eval": row.get("n_eval"),
                  "model": row.get("model"), "seed": row.get("seed"), "k": row.get("k"),
                  "config": row.get("config"), "recommended": recommended, "plan": plan,
                  "metrics": {row["metric"]: row["score"]} if row.get("metric") else {},
                  "costs": {k: row[k] for k in COMPARISON_COSTS if row.get(k) is not None}}
    return comparison, _data(plan, row, card)


def _data(plan: dict | None, row: dict, card: dict) -> dict | None:
    """The run's training sample and test rows, re-read from the plan's files; None when they
    are gone or no longer hash as the card recorded."""
    if not plan:
        return None
    try:
        from tailorlm.compare.bakeoff import load_data
        from tailorlm.compare.plan import build_plan
        from tailorlm.compare.runner import evaluation_subset
        from tailorlm.data.sample import k_per_class

        raw = {k: v for k, v in plan.items() if k != "resolved"}
        train, test, _ = load_data(build_plan(raw, [], "plan.yaml"))
        sizes = plan.get("resolved") or {}
        test = evaluation_subset(test, sizes.get("max_test"), seed=0)
        shots = k_per_class(train, row["k"], row.get("seed", 0)) if row.get("k") else train
    except Exception:  # files moved or changed since: the version is kept without its rows
        return None
    if shots.fingerprint() != data_of(card).get("train_sha256"):
        return None
    return {"train": shots, "test": test}
