"""Lineage: where a version came from, read from its card (and its comparison, when it had one).

    base        the model it was fitted on: name, hub identity, sha256 of the weights, variant
    data        sha256 and size of the rows it was fitted, validated and tested on
    recipe      method, resolved config, seed, k, the comparison's plan, tailorlm version:
                what `tailor upgrade` re-runs on a new base
    comparison  the comparison it came from (folder, run key, whether it was recommended) and that
                run's metrics and costs
    parent      the version it was re-fitted from (an upgrade), as NAME:VERSION

The card is the one format of methods/artifact.py (`base_model` an object with identity, sha256
and variant). Folders written before it (a `base_model` string next to `base_model_sha256`) are
read too, so older adapters can be pushed.
"""

from __future__ import annotations

from tailorlm import __version__

COMPARISON_COSTS = ("fit_seconds", "eval_seconds", "latency_ms_per_query", "artifact_bytes",
                    "peak_rss_mb", "prompt_tokens_per_query", "trainable_params", "load_seconds",
                    "total_params", "train_tokens", "train_flops")


def base_of(card: dict) -> dict:
    base = card.get("base_model")
    if isinstance(base, dict):  # the one card format
        return {"name": base.get("name") or card.get("model"), "identity": base.get("identity"),
                "sha256": base.get("sha256"), "variant": base.get("variant"),
                "dtype": base.get("dtype") or card.get("dtype"), "source": base.get("source")}
    return {"name": card.get("model") or base, "identity": base,
            "sha256": card.get("base_model_sha256"), "variant": card.get("base_model_variant"),
            "dtype": card.get("dtype"), "source": card.get("base_model_source")}


def data_of(card: dict) -> dict:
    data = card.get("data") if isinstance(card.get("data"), dict) else card
    keys = ("train_sha256", "val_sha256", "test_sha256", "n_train", "n_val", "n_test")
    return {k: data.get(k) for k in keys}


def recipe_of(card: dict, adapter: dict, comparison: dict | None) -> dict:
    # a key the card holds as null (a runner's card knows no plan) is filled like a missing one
    recipe = {k: v for k, v in (card.get("recipe") or {}).items() if v is not None}
    recipe.setdefault("method", adapter.get("method") or card.get("method"))
    recipe.setdefault("config", adapter.get("config", card.get("config")))
    for key in ("seed", "k"):
        recipe.setdefault(key, (comparison or {}).get(key, card.get(key)))
    recipe.setdefault("plan", (comparison or {}).get("plan"))
    recipe.setdefault("tailorlm_version", card.get("tailorlm_version") or __version__)
    return recipe


def lineage_of(card: dict, adapter: dict, *, comparison: dict | None = None,
               parent: str | None = None) -> dict:
    """The lineage a version records, from its folder's card.json and adapter.json."""
    metrics = {k: v for k, v in (card.get("metrics") or {}).items()}
    costs = dict(card.get("costs") or {})
    if comparison:
        metrics = {**metrics, **comparison.get("metrics", {})}
        costs = {**{k: v for k, v in comparison.get("costs", {}).items()}, **costs}
    base = base_of(card)
    if comparison and comparison.get("model") and not isinstance(card.get("base_model"), dict) \
            and not card.get("model"):  # a runner's card: the comparison names the model asked for
        base["name"] = comparison["model"]
    return {"base": base, "data": data_of(card),
            "recipe": recipe_of(card, adapter, comparison),
            "comparison": comparison, "metrics": metrics, "costs": costs, "parent": parent}


def flat(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the keys `diff` compares."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree} if prefix else {}
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out
