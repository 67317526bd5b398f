import dataclasses
import json

import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.data.task import Example
from tailorlm.engine.cost import dir_bytes
from tailorlm.engine.evaluate import evaluate, label_scores, predict
from tailorlm.errors import TailorError
from tailorlm.methods import METHODS, get_method, hybrid
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.hybrid import FALLBACK, Stacked, add_variant, folder_name

WEIGHT = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "bf16": False, "template": "text_label"}
FEW = {"n_demos": 2, "n_candidates": 1, "template": "text_label", "calibrate": "off"}


def client_task(clients=("acme", "globex"), n_per_class=8):
    """The tiny sentiment task, each class's rows split in turn between the clients."""
    base = sentiment_task(n_per_class)
    rows = [Example(e.input, e.target, e.label, extra={"client": clients[i % len(clients)]})
            for i, e in enumerate(base.examples)]
    return base.with_examples(rows)


@pytest.fixture
def counted(fit_calls):
    return fit_calls  # conftest.py: every method's fit calls, by name


def config(name="lora+few_shot", **extra):
    return get_method(name).config.from_dict(
        {"weight": WEIGHT, "input": FEW, "variant_field": "client", **extra})


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


@pytest.fixture(scope="module")
def fitted(backend, tmp_path_factory):
    """lora+few_shot fitted on two clients, its fit counts, and its saved folder."""
    with pytest.MonkeyPatch.context() as mp:
        counts = {}
        for name, spec in list(METHODS.items()):
            def fit(*args, _spec=spec, **kwargs):
                counts[_spec.name] = counts.get(_spec.name, 0) + 1
                return _spec.fit(*args, **kwargs)
            mp.setitem(METHODS, name, dataclasses.replace(spec, fit=fit))
        hybrid.hybrid_spec.cache_clear()
        try:
            adapter = get_method("lora+few_shot").fit(
                backend, client_task(), None, config(), seed=0,
                work_dir=tmp_path_factory.mktemp("hybrid-work"))
        finally:
            hybrid.hybrid_spec.cache_clear()
    folder = tmp_path_factory.mktemp("hybrid") / "a"
    save_adapter(adapter, folder, {"base_model": backend.identity,
                                   "base_model_sha256": backend.sha256})
    return adapter, counts, folder


def test_names_parse_into_hybrids_and_sides_are_checked():
    spec = get_method("lora+soft_prompt")
    assert spec.name == "lora+soft_prompt" and spec.side == "weight"
    assert get_method("lora").side == "weight" and get_method("soft_prompt").side == "input"
    assert "lora+soft_prompt" not in METHODS  # built on demand, not registered
    with pytest.raises(TailorError, match=r"weight-side method comes first: write lora\+soft_p"):
        get_method("soft_prompt+lora")
    with pytest.raises(TailorError, match="starts with a weight-side method"):
        get_method("few_shot+soft_prompt")
    with pytest.raises(TailorError, match="ends with an input-side method"):
        get_method("lora+full")
    with pytest.raises(TailorError, match="unknown method 'lorax'"):
        get_method("lorax+few_shot")
    with pytest.raises(TailorError, match="joins two methods"):
        get_method("lora+few_shot+prefix")


def test_config_takes_sides_dotted_and_shared_options():
    cfg = get_method("lora+soft_prompt").config.from_dict(
        {"epochs": 3, "weight.lr": 5e-4, "input": {"n_virtual": 4}, "variant_field": "client"})
    d = cfg.to_dict()
    assert d["weight"]["epochs"] == d["input"]["epochs"] == 3  # a bare option goes to both
    assert d["weight"]["lr"] == 5e-4 and d["input"]["lr"] == 3e-2  # its own default kept
    assert d["input"]["n_virtual"] == 4 and d["variant_field"] == "client"
    assert type(cfg).from_dict(d).to_dict() == d  # round trip
    # the input side reads the prompt the weights learned, unless told otherwise
    few = get_method("lora+few_shot").config.from_dict({"weight.template": "text_label"})
    assert few.input.template == "text_label"
    assert get_method("lora+few_shot").config.from_dict({"input.template": "auto"}) \
        .input.template == "auto"
    with pytest.raises(TailorError, match="unknown option colour .* valid options: variant_field"):
        type(cfg).from_dict({"colour": 1})
    with pytest.raises(TailorError, match="r must be a whole number >= 1"):
        type(cfg).from_dict({"weight.r": 0})
    with pytest.raises(TailorError, match="variant_field must be a column name"):
        type(cfg).from_dict({"variant_field": ""})


def test_weight_side_fits_once_and_each_variant_gets_its_own_input_side(fitted):
    adapter, counts, _ = fitted
    assert counts == {"lora": 1, "few_shot": 3}  # two variants and the fallback
    assert sorted(adapter.variants) == ["acme", "globex"]
    task = client_task()
    for client, side in adapter.variants.items():
        own = {e.input for e in task.examples if e.extra["client"] == client}
        assert side.demos and {d.input for d in side.demos} <= own
    assert {d.input for d in adapter.variants["acme"].demos}.isdisjoint(
        {d.input for d in adapter.variants["globex"].demos})
    report = adapter.train_result
    assert report["variants"]["acme"]["n_train"] == 8 == report["variants"]["globex"]["n_train"]
    assert report["fallback"]["n_train"] == 16 and report["n_variants"] == 2
    assert report["weight"]["steps"] > 0 and report["tokens_seen"] > 0
    assert report["trainable_params"] == adapter.weight.trainable_params > 0


def test_folder_layout_and_bytes_against_one_lora_per_variant(fitted):
    adapter, _, folder = fitted
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["adapter.json", "card.json",
                     "fallback/adapter.json", "fallback/card.json",
                     "variants/acme/adapter.json", "variants/acme/card.json",
                     "variants/globex/adapter.json", "variants/globex/card.json",
                     "weight/adapter.json", "weight/adapter_config.json",
                     "weight/adapter_model.safetensors", "weight/card.json"]
    state = json.loads((folder / "adapter.json").read_text())
    assert state["method"] == "lora+few_shot" and state["config"]["variant_field"] == "client"
    report = state["state"]["train_result"]
    weight_bytes = dir_bytes(folder / "weight")
    assert report["weight_bytes"] == weight_bytes
    assert report["one_lora_per_variant_bytes"] == 2 * weight_bytes
    assert report["variants"]["acme"]["bytes"] == dir_bytes(folder / "variants" / "acme")
    assert report["total_bytes"] == dir_bytes(folder) - sum(
        (folder / f).stat().st_size for f in ("adapter.json", "card.json"))
    assert report["add_variant_bytes"] < weight_bytes  # a variant is text next to a LoRA
    assert load_adapter(folder / "weight").method == "lora"  # each part loads on its own


def test_round_trip_predicts_the_same(backend, fitted):
    adapter, _, folder = fitted
    task = client_task()
    loaded = load_adapter(folder)
    assert sorted(loaded.variants) == ["acme", "globex"]
    np.testing.assert_allclose(label_scores(backend, loaded, task),
                               label_scores(backend, adapter, task), atol=1e-5)
    assert predict(backend, loaded, task) == predict(backend, adapter, task)


def test_groups_route_by_variant_and_unknown_variants_fall_back(backend, fitted):
    adapter, _, _ = fitted
    rows = client_task().examples[:3] + [Example("a great film", "positive", "positive",
                                                 extra={"client": "initech"}),
                                         Example("a bad film", "negative", "negative")]
    task = client_task().with_examples(rows)
    groups = adapter.groups(task)
    assert [(name, idx) for name, _, idx in groups] == \
        [("acme", [0, 2]), ("globex", [1]), (FALLBACK, [3, 4])]
    assert adapter.route(rows[3]) is adapter.fallback is adapter.route(rows[4])
    assert adapter.prompt(rows[1]).text == adapter.variants["globex"].prompt(rows[1]).text
    # stitched scores are each group's own adapter's scores
    scores = label_scores(backend, adapter, task)
    for _, part, idx in groups:
        np.testing.assert_allclose(
            scores[idx], label_scores(backend, part, task.with_examples([rows[i] for i in idx])))
    result = evaluate(backend, adapter, task)
    assert result.extra["groups"]["acme"]["n_eval"] == 2
    assert set(result.extra["groups"]) == {"acme", "globex", FALLBACK}


def test_add_variant_trains_only_the_input_side(backend, fitted, counted, tmp_path):
    import shutil

    _, _, saved = fitted
    folder = tmp_path / "h"
    shutil.copytree(saved, folder)
    weight = {p.name: (p.stat().st_mtime_ns, p.stat().st_size)
              for p in (folder / "weight").iterdir()}
    new = client_task(clients=("initech",), n_per_class=6)
    added = add_variant(backend, folder, "initech", new, seed=0)
    assert counted == {"few_shot": 1}  # no LoRA fit
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size)
            for p in (folder / "weight").iterdir()} == weight
    loaded = load_adapter(folder)
    assert sorted(loaded.variants) == ["acme", "globex", "initech"]
    row = Example("a great film", "positive", "positive", extra={"client": "initech"})
    assert loaded.route(row).demos == added.variants["initech"].demos
    report = json.loads((folder / "adapter.json").read_text())["state"]["train_result"]
    assert report["n_variants"] == 3 and report["variants"]["initech"]["n_train"] == 12
    assert report["one_lora_per_variant_bytes"] == 3 * dir_bytes(folder / "weight")
    card = json.loads((folder / "card.json").read_text())
    assert "initech" in card["costs"]["variants"]
    with pytest.raises(TailorError, match="already has variant 'initech'"):
        add_variant(backend, folder, "initech", new)
    with pytest.raises(TailorError, match="no training row belongs to variant 'umbrella'"):
        add_variant(backend, folder, "umbrella", new)


def test_without_variant_field_one_input_side_reads_everything(backend, counted):
    cfg = config(variant_field=None)
    adapter = get_method("lora+few_shot").fit(backend, client_task(), None, cfg, seed=0)
    assert counted == {"lora": 1, "few_shot": 1} and adapter.variants == {}
    assert [name for name, _, _ in adapter.groups(client_task())] == [FALLBACK]


def test_missing_variant_column_fails_before_the_weight_side_fits(backend, counted):
    cfg = config(variant_field="region")
    with pytest.raises(TailorError, match="no training row has a 'region' column .*client"):
        get_method("lora+few_shot").fit(backend, client_task(), None, cfg, seed=0)
    assert counted == {}


def test_full_weight_side(backend):
    adapter = get_method("full+few_shot").fit(
        backend, client_task(), None, config("full+few_shot", **{"weight.epochs": 1}), seed=0)
    assert sorted(adapter.variants) == ["acme", "globex"]
    assert adapter.trainable_params == backend.total_params
    bound = adapter.bind(backend)
    assert bound.model is not backend.model and bound.virtual_prefix is None


def test_folder_names_are_safe_and_distinct():
    assert folder_name("acme") == "acme"
    assert folder_name("a/b c").startswith("a_b_c-") and folder_name("a/b") != folder_name("a b")
    assert folder_name("..").startswith("variant-")


def test_lora_with_soft_prompt_per_variant(backend, tmp_path):
    cfg = get_method("lora+soft_prompt").config.from_dict(
        {"weight": WEIGHT, "input": {**WEIGHT, "lr": 3e-2, "n_virtual": 3},
         "variant_field": "client"})
    task = client_task()
    adapter = get_method("lora+soft_prompt").fit(backend, task, None, cfg, seed=0)
    acme, globex = adapter.variants["acme"], adapter.variants["globex"]
    assert acme.prompt_embeddings.shape == (3, 32)
    assert not np.allclose(acme.prompt_embeddings, globex.prompt_embeddings)
    # each group runs over the LoRA model with its own virtual prefix
    part = dict((name, p) for name, p, _ in adapter.groups(task))["acme"]
    bound = part.bind(backend)
    assert bound.virtual_prefix is not None and bound.model is adapter.bind(backend).model
    # the LoRA side binds merged (as fast as the base; the input side trained through it) and
    # scores as PEFT's unmerged layers do
    assert not any("lora" in n for n, _ in bound.model.named_modules())
    from tailorlm.engine.scoring import score_labels

    rows = task.with_examples([e for e in task.examples if e.extra["client"] == "acme"])
    prompts, labels = [part.prompt(e) for e in rows.examples], part.continuations(rows)
    unmerged = part.input.bind(adapter.weight.bind_unmerged(backend))
    np.testing.assert_allclose(score_labels(bound, prompts, labels),
                               score_labels(unmerged, prompts, labels), atol=1e-4)
    assert isinstance(part, Stacked) and part.trainable_params == \
        adapter.weight.trainable_params + 3 * 32
    scores = label_scores(backend, adapter, task)
    # every query reads its variant's 3 virtual positions before its text
    text = np.mean([len(backend.encode(adapter.prompt(e).text)) for e in task.examples])
    assert evaluate(backend, adapter, task).prompt_tokens_per_query == pytest.approx(3 + text)
    save_adapter(adapter, tmp_path / "h", {})
    assert sorted(p.name for p in (tmp_path / "h" / "variants" / "acme").iterdir()) == \
        ["adapter.json", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    np.testing.assert_allclose(label_scores(backend, load_adapter(tmp_path / "h"), task), scores,
                               atol=1e-5)
