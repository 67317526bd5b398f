"""`tailor upgrade`: re-run a version's recipe on a new base model, and measure what that costs.

"Each model version must be retrained when base models update": this is that retraining, done and
timed. For one version (or every aliased version of a name):

    recipe   method, resolved config, seed, k     (its lineage)
    data     the rows it was fitted on and tested on, kept in the registry by hash at push time,
             or the files again (--train/--test): the same seeded k-per-class sample, checked
             against the recorded train_sha256
    old      its adapter on its own base, scored on the test rows
    new      the recipe fitted on the new base (compare/tune.py, as `tailor tune` does), scored
             on the same rows, pushed as the next version with the old one as its parent

No alias moves unless asked (`alias="candidate"`). The report (upgrade.json, upgrade.md under the
output folder) gives per version: quality before and after, the fit's seconds and its price on
the new base, and next to each other what carrying a prompt-side recipe over costs against a
weight-side one.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from tailorlm.compare.plan import COSTS
from tailorlm.errors import TailorError


def upgrade(ref: str, base: str, *, registry=None, all_aliases: bool = False,
            alias: str | None = None, train=None, test=None, out: str | Path | None = None,
            dtype: str = "float32", on_note=print) -> dict:
    """Re-fit REF (or, with `all_aliases`, every version an alias of the name points at) on
    `base`; returns the report, also written to OUT/upgrade.{json,md}."""
    from tailorlm.registry import Registry
    from tailorlm.registry.names import check_alias, parse_ref

    reg = registry or Registry()
    if alias is not None:
        check_alias(alias)
    parsed = parse_ref(ref)
    if all_aliases:
        if parsed.version is not None or parsed.alias is not None:
            raise TailorError(f"--all-aliases takes a NAME, not {ref}")
        targets = sorted({v.ref: v for v in reg.versions(parsed.name) if v.aliases}.values(),
                         key=lambda v: v.version)
        if not targets:
            raise TailorError(f"no alias points at a version of {parsed.name}; name one version "
                              f"(NAME:VERSION)")
    else:
        targets = [reg.resolve(parsed)]
    out = Path(out) if out else _default_out()
    out.mkdir(parents=True, exist_ok=True)
    backends = Backends(dtype)
    rows = []
    for version in targets:
        on_note(f"upgrade: {version.ref} ({version.method}, aliases "
                f"{', '.join(version.aliases) or '-'}) -> {base}")
        rows.append(upgrade_one(reg, version, base, backends, alias=alias, train=train,
                                test=test, out=out, on_note=on_note))
    report = {"base": base, "versions": rows, "prices": {"cpu_hour_usd": COSTS["cpu_hour_usd"]},
              "carry_over": carry_over(rows)}
    (out / "upgrade.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "upgrade.md").write_text(markdown(report), encoding="utf-8")
    report["out"] = str(out)
    return report


def _default_out() -> Path:
    from tailorlm.paths import tailorlm_home

    return tailorlm_home() / "upgrades" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class Backends:
    """Base models loaded once for all the versions of an upgrade, at most two held at a time."""

    def __init__(self, dtype: str):
        self.dtype, self.held = dtype, {}

    def get(self, name: str, sha256: str | None = None):
        from tailorlm.models import load_backend

        if name not in self.held:
            while len(self.held) >= 2:
                self.held.pop(next(iter(self.held)))
                gc.collect()
            self.held[name] = load_backend(name, dtype=self.dtype)
        backend = self.held[name]
        if sha256 and backend.sha256 != sha256:
            raise TailorError(f"{name} now has weights sha256 {backend.sha256[:12]}, not "
                              f"{sha256[:12]} as when the version was fitted")
        return backend


def recipe_data(reg, version, train=None, test=None):
    """(training rows, test rows) of a version: kept in the registry, or re-read from the files
    given (sampled with its seed and k, and checked against its recorded hash)."""
    from tailorlm.data.sample import k_per_class

    recipe, recorded = version.lineage["recipe"], version.lineage["data"]
    kept = reg.data(version)
    if train is not None:
        shots = k_per_class(train, recipe["k"], recipe.get("seed") or 0) if recipe.get("k") \
            else train
        if recorded.get("train_sha256") and shots.fingerprint() != recorded["train_sha256"]:
            raise TailorError(f"the training rows given hash to {shots.fingerprint()[:12]} "
                              f"(k={recipe.get('k')}, seed {recipe.get('seed')}), not "
                              f"{recorded['train_sha256'][:12]} as {version.ref} recorded: pass "
                              f"the file it was fitted from")
    elif "train" in kept:
        shots = kept["train"]
    else:
        raise TailorError(f"{version.ref} keeps no training rows; pass the data it was fitted "
                          f"from again (--train, --test)")
    rows = test if test is not None else kept.get("test")
    if rows is None:
        raise TailorError(f"{version.ref} keeps no test rows; pass --test")
    return shots, rows


def upgrade_one(reg, version, base: str, backends: Backends, *, alias, train, test, out: Path,
                on_note) -> dict:
    from tailorlm.compare.tune import tune
    from tailorlm.engine.evaluate import evaluate
    from tailorlm.methods.artifact import update_card
    from tailorlm.methods.index import get_method

    recipe, old_base = version.lineage["recipe"], version.lineage["base"]
    shots, rows = recipe_data(reg, version, train, test)
    metric = (version.lineage.get("comparison") or {}).get("metric")
    seed = recipe.get("seed") or 0

    old_backend = backends.get(old_base["name"] or old_base["source"], old_base.get("sha256"))
    before = evaluate(old_backend, reg.load(version), rows, metric=metric, seed=seed)
    on_note(f"  before: {before.metric} {before.score:.3f} on {old_base['name']} "
            f"({len(rows)} test rows)")

    new_backend = backends.get(base)
    folder = out / f"v{version.version}"
    tuned = tune(new_backend, recipe["method"], shots, folder, config=recipe.get("config"),
                 seed=seed, model=base, metric=metric)
    after = evaluate(new_backend, tuned.adapter, rows, metric=metric, seed=seed)
    update_card(folder, {"metrics": {after.metric: after.score}})
    fit_seconds = tuned.card["costs"]["fit_seconds"]
    on_note(f"  after: {after.metric} {after.score:.3f} on {base} (fit {fit_seconds:.1f}s)")
    spec = get_method(recipe["method"])
    lineage = {"kind": "upgrade", "from": version.ref, "from_base": old_base.get("name"),
               "metric": after.metric, "score": after.score, "seed": seed, "k": recipe.get("k"),
               "plan": recipe.get("plan"), "metrics": {after.metric: after.score},
               "costs": {"fit_seconds": fit_seconds, "eval_seconds": after.seconds,
                         "latency_ms_per_query": after.latency_ms_per_query}}
    new = reg.push(folder, version.name, parent=version.ref, alias=alias, comparison=lineage,
                   data={"train": shots, "test": rows},
                   reason=f"upgrade of {version.ref} to {base}")
    return {"from": version.ref, "to": new.ref, "aliases": version.aliases,
            "moved_alias": alias, "method": recipe["method"], "family": spec.family,
            "side": spec.side, "old_base": old_base.get("name"), "new_base": base,
            "metric": after.metric, "n_test": len(rows), "n_train": len(shots),
            "score_before": before.score, "score_before_ci": list(before.score_ci),
            "score_after": after.score, "score_after_ci": list(after.score_ci),
            "fit_seconds": fit_seconds,
            "fit_usd": fit_seconds / 3600 * COSTS["cpu_hour_usd"],
            "eval_seconds": after.seconds, "latency_ms_before": before.latency_ms_per_query,
            "latency_ms_after": after.latency_ms_per_query,
            "trainable_params": tuned.adapter.trainable_params,
            "artifact_bytes": tuned.artifact_bytes}


def carry_over(rows: list[dict]) -> dict:
    """Fit seconds to carry each side's recipes to the new base: prompt-side against weight-side."""
    out = {}
    for side in ("input", "weight"):
        mine = [r for r in rows if r["side"] == side]
        if mine:
            out[side] = {"versions": [r["from"] for r in mine],
                         "fit_seconds": sum(r["fit_seconds"] for r in mine),
                         "fit_usd": sum(r["fit_usd"] for r in mine)}
    return out


def markdown(report: dict) -> str:
    lines = [f"# Upgrade to {report['base']}", "",
             "| version | aliases | method | old base | score before | score after | fit on new "
             "base | fit cost | new version |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["versions"]:
        lines.append(f"| {r['from']} | {', '.join(r['aliases']) or '-'} | {r['method']} | "
                     f"{r['old_base']} | {r['metric']} {r['score_before']:.3f} | "
                     f"{r['score_after']:.3f} | {r['fit_seconds']:.1f} s | "
                     f"${r['fit_usd']:.5f} | {r['to']} |")
    co = report["carry_over"]
    if "input" in co and "weight" in co:
        lines += ["", f"Carrying the prompt-side recipes over took {co['input']['fit_seconds']:.1f}"
                  f" s of fitting; the weight-side ones {co['weight']['fit_seconds']:.1f} s."]
    n = report["versions"][0]["n_test"] if report["versions"] else 0
    lines += ["", f"Scores on the same {n} test rows, old adapter on its old base and the re-fitted"
              f" one on {report['base']}; fit cost at ${report['prices']['cpu_hour_usd']:g}/CPU-"
              f"hour. No alias moved unless named."]
    return "\n".join(lines) + "\n"
