"""prefix: PEFT parity under grouped-query attention, the adapter folder, training (direct and
reparameterized), round trip, init, config errors.

The tiny Llama has 4 heads and 2 key/value heads of size 8 (like SmolLM2's 9 and 3 of size 64), so
a layer's prefix is 2 x 8 = 16 values per position for keys and 16 for values, not hidden = 32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from helpers import sentiment_task, sharp_tiny_backend
from peft_reference import peft_label_scores, peft_loss_and_grad
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.prompt import Prompt
from tailorlm.engine.scoring import score_labels
from tailorlm.engine.train import collate
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.prefix import (PrefixAdapter, PrefixConfig, PrefixTrainable, initial_encoder,
                                     peft_config, prefix_cache)
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows
from tailorlm.methods.virtual_prefix import frozen, init_token_ids

N = 3  # virtual positions
WIDTH = 2 * 2 * 2 * 8  # layers * (keys, values) * kv_heads * head_dim


@pytest.fixture(scope="module")
def backend():
    return sharp_tiny_backend()


@pytest.fixture(scope="module")
def task():
    return sentiment_task(8)


def make_adapter(backend, task, flat, config=None) -> PrefixAdapter:
    config = config or PrefixConfig(n_virtual=flat.shape[0])
    return PrefixAdapter("prefix", config, task.with_examples([]), resolve("text_label", task),
                         prefix=flat, peft_config=peft_config(backend, flat.shape[0]))


@pytest.fixture(scope="module")
def trained(backend, task, tmp_path_factory):
    """Per reparameterize: (adapter before, adapter after, base weights before, requires_grad
    flags before and after, per-step losses)."""
    runs = {}
    for reparameterize in (False, True):
        config = PrefixConfig(n_virtual=N, epochs=3, batch_size=4, lr=0.05, bf16=False,
                              reparameterize=reparameterize)
        start = initial_encoder(backend, task, config, seed=0)
        with torch.no_grad():
            before = make_adapter(backend, task, start().detach().clone(), config)
        backend.model.lm_head.requires_grad_(False)  # a mixed state, to see it restored as it was
        flags = {n: p.requires_grad for n, p in backend.model.named_parameters()}
        weights = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
        work_dir = tmp_path_factory.mktemp("prefix_run")
        after = get_method("prefix").fit(backend, task, task, config, seed=0, work_dir=work_dir)
        log = (work_dir / "train_log.jsonl").read_text().splitlines()
        flags_after = {n: p.requires_grad for n, p in backend.model.named_parameters()}
        runs[reparameterize] = (before, after, weights, (flags, flags_after),
                                [json.loads(line)["loss"] for line in log])
        backend.model.lm_head.requires_grad_(True)
    return runs


def test_cache_has_grouped_query_shapes_in_peft_layout(backend):
    flat = torch.arange(N * WIDTH, dtype=torch.float32).view(N, WIDTH)
    cache = prefix_cache(backend.model, flat)
    assert len(cache.layers) == 2
    per_token = flat.view(N, 2 * 2, 2, 8)  # (n, layers * (k, v), kv_heads, head_dim)
    for layer in range(2):
        assert cache.layers[layer].keys.shape == (1, 2, N, 8)  # (1, kv_heads, n, head_dim)
        assert torch.equal(cache.layers[layer].keys[0], per_token[:, 2 * layer].permute(1, 0, 2))
        assert torch.equal(cache.layers[layer].values[0],
                           per_token[:, 2 * layer + 1].permute(1, 0, 2))


def test_logits_match_peft_and_folder_is_peft_format(backend, task, tmp_path):
    g = torch.Generator().manual_seed(1)
    adapter = make_adapter(backend, task, torch.randn(N, WIDTH, generator=g))
    folder = save_adapter(adapter, tmp_path / "px", card={})
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.json", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        assert list(f.keys()) == ["prompt_embeddings"]
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("prompt_embeddings").shape == (N, WIDTH)
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert {k: saved[k] for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim",
                                  "num_layers", "num_attention_heads", "encoder_hidden_size",
                                  "num_transformer_submodules", "prefix_projection",
                                  "base_model_name_or_path", "inference_mode")} == {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": N,
        "token_dim": 16, "num_layers": 2, "num_attention_heads": 2, "encoder_hidden_size": 16,
        "num_transformer_submodules": 1, "prefix_projection": False,
        "base_model_name_or_path": "test/tiny-llama", "inference_mode": True}

    prompts = [adapter.prompt(e) for e in task.examples]
    ours = label_scores(backend, adapter, task)
    theirs = peft_label_scores(backend, folder, prompts, adapter.continuations(task))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.abs(ours - label_scores(backend, make_adapter(backend, task, adapter.prefix * 0),
                                      task)).max() > 0.1  # the prefix matters


def test_peft_writes_the_config_we_write(backend, tmp_path):
    """PEFT's own get_peft_model on this model saves the same GQA sizes (token_dim = kv_heads *
    head_dim, num_attention_heads = kv_heads) and tensor width as we do."""
    import copy

    from peft import PrefixTuningConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(backend.model),
                           PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N))
    model.save_pretrained(str(tmp_path))
    theirs = json.loads((tmp_path / "adapter_config.json").read_text())
    ours = peft_config(backend, N)
    assert {k: theirs[k] for k in ours if k != "base_model_name_or_path"} == {
        k: v for k, v in ours.items() if k != "base_model_name_or_path"}
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        assert f.get_tensor("prompt_embeddings").shape == (N, WIDTH)


def test_training_loss_and_gradient_match_peft(backend, task):
    from peft import PrefixTuningConfig

    g = torch.Generator().manual_seed(2)
    flat = torch.randn(N, WIDTH, generator=g)
    config = PrefixConfig(n_virtual=N)
    encoder = initial_encoder(backend, task, config, seed=0)
    with torch.no_grad():
        encoder.embedding.copy_(flat)
    trainable = PrefixTrainable(backend.model, encoder)
    batch = collate(encode_rows(backend, resolve("text_label", task), task)[::3],
                    pad_id=backend.tokenizer.pad_token_id)
    with frozen(backend.model):
        loss, n = trainable.loss(batch)
        loss.backward()
    want_loss, want_grad = peft_loss_and_grad(
        backend, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N), flat, batch)
    torch.testing.assert_close(loss.detach(), want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.embedding.grad, want_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reparameterize", [False, True])
def test_training_lowers_loss_and_leaves_the_base_alone(backend, task, trained, reparameterize):
    before, after, weights, flags, losses = trained[reparameterize]
    assert len(losses) == 3 * 4
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    gold = [task.labels.index(e.label) for e in task.examples]

    def gold_logprob(adapter):
        return label_scores(backend, adapter, task)[np.arange(len(gold)), gold].mean()

    assert gold_logprob(after) > gold_logprob(before) + 0.5
    assert after.prefix.shape == (N, WIDTH)  # the projected prefix, MLP or not
    mlp = (32 * 32 + 32) + (32 * WIDTH + WIDTH)  # Linear(32, 32), Linear(32, WIDTH)
    assert after.trainable_params == (N * 32 + mlp if reparameterize else N * WIDTH)
    for name, p in backend.model.named_parameters():
        assert torch.equal(p, weights[name]), name
    assert flags[0] == flags[1] and not flags[1]["lm_head.weight"] and flags[1]["model.norm.weight"]


@pytest.mark.parametrize("reparameterize", [False, True])
def test_save_load_round_trip_is_bit_exact(backend, task, trained, reparameterize, tmp_path):
    adapter = trained[reparameterize][1]
    folder = save_adapter(adapter, tmp_path / "px", card={})
    loaded = load_adapter(folder)
    assert loaded.method == "prefix" and loaded.config == adapter.config
    assert torch.equal(loaded.prefix, adapter.prefix)
    assert loaded.trainable_params == adapter.trainable_params
    assert np.array_equal(label_scores(backend, loaded, task), label_scores(backend, adapter, task))
    if reparameterize:  # what PEFT loads is the projected prefix: same logits
        prompts = [adapter.prompt(e) for e in task.examples]
        np.testing.assert_allclose(
            peft_label_scores(backend, folder, prompts, adapter.continuations(task)),
            label_scores(backend, adapter, task), atol=1e-4)


def test_labels_init_is_the_label_words_written_first(backend, task):
    """Before training, a labels-initialised prefix is exactly the model reading those tokens."""
    config = PrefixConfig(n_virtual=5)
    template = resolve("text_label", task)
    ids = init_token_ids(backend, task, template, "labels", "", 5, seed=0)
    words = [i for w in (" negative", " positive") for i in backend.encode(w)]
    assert ids == [words[i % len(words)] for i in range(5)]
    with torch.no_grad():
        adapter = make_adapter(backend, task, initial_encoder(backend, task, config, 0)().clone())
    prompts = [adapter.prompt(e) for e in task.examples]
    as_text = [Prompt(backend.tokenizer.decode(ids), p.own) for p in prompts]
    assert backend.encode(as_text[0].shared) == ids
    np.testing.assert_allclose(label_scores(backend, adapter, task),
                               score_labels(backend, as_text, adapter.continuations(task)),
                               atol=1e-5)


def test_reparameterized_init_is_seeded(backend, task):
    config = PrefixConfig(n_virtual=N, reparameterize=True)
    a, b, c = (initial_encoder(backend, task, config, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.transform[0].weight, c.transform[0].weight)
    assert torch.equal(a.embedding, backend.model.get_input_embeddings().weight[
        init_token_ids(backend, task, resolve("text_label", task), "labels", "", N, 0)])


@pytest.mark.parametrize("values, message", [
    ({"n_virtual": 0}, "n_virtual must be a whole number of at least 1"),
    ({"init": "random"}, "init must be one of labels, text, vocab"),
    ({"init": "text", "init_text": "  "}, "init: text needs init_text"),
    ({"reparameterize": "yes"}, "reparameterize must be true or false"),
    ({"schedule": "step"}, "schedule must be one of linear, cosine, constant"),
])
def test_config_errors_say_how_to_fix(values, message):
    with pytest.raises(TailorError, match=message):
        PrefixConfig.from_dict(values)


def test_default_config_is_the_documented_one():
    config = PrefixConfig()
    assert (config.n_virtual, config.reparameterize, config.init, config.lr) == \
        (10, False, "labels", 1e-2)
    assert PrefixConfig.from_dict(config.to_dict()) == config


def test_load_refuses_a_prompt_tuning_folder(backend, task, tmp_path):
    folder = save_adapter(make_adapter(backend, task, torch.zeros(N, WIDTH)), tmp_path / "px",
                          card={})
    saved = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**saved,
                                                            "peft_type": "PROMPT_TUNING"}))
    with pytest.raises(TailorError, match="holds a PROMPT_TUNING adapter"):
        load_adapter(folder)
