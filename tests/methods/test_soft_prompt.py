"""soft_prompt: PEFT parity, the adapter folder, training, round trip, init modes, config errors.

The tiny Llama has grouped-query attention (4 heads, 2 key/value heads), like SmolLM2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from helpers import sentiment_task, sharp_tiny_backend
from peft_reference import peft_label_scores, peft_loss_and_grad
from tailorlm.data.task import Example, Task
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.train import collate
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.soft_prompt import (SoftPromptAdapter, SoftPromptConfig, SoftPromptTrainable,
                                          initial_prompt, peft_config)
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows
from tailorlm.methods.virtual_prefix import frozen

N = 4  # virtual tokens


@pytest.fixture(scope="module")
def backend():
    return sharp_tiny_backend()


@pytest.fixture(scope="module")
def task():
    return sentiment_task(8)


def make_adapter(backend, task, prompt, config=None) -> SoftPromptAdapter:
    config = config or SoftPromptConfig(n_virtual=prompt.shape[0])
    return SoftPromptAdapter("soft_prompt", config, task.with_examples([]),
                             resolve("text_label", task), prompt_embeddings=prompt,
                             peft_config=peft_config(backend, prompt.shape[0]))


@pytest.fixture(scope="module")
def trained(backend, task, tmp_path_factory):
    """(adapter before training, adapter after, base weights before, requires_grad flags before
    and after, the per-step losses of the run)."""
    config = SoftPromptConfig(n_virtual=N, epochs=3, batch_size=4, bf16=False, patience=0,
                              template="text_label")
    before = make_adapter(backend, task, initial_prompt(backend, task, config, seed=0), config)
    backend.model.lm_head.requires_grad_(False)  # a mixed state, to see it restored as it was
    flags = {n: p.requires_grad for n, p in backend.model.named_parameters()}
    weights = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    work_dir = tmp_path_factory.mktemp("soft_prompt_run")
    after = get_method("soft_prompt").fit(backend, task, task, config, seed=0, work_dir=work_dir)
    log = (work_dir / "train_log.jsonl").read_text().splitlines()
    flags = (flags, {n: p.requires_grad for n, p in backend.model.named_parameters()})
    backend.model.lm_head.requires_grad_(True)
    return before, after, weights, flags, [json.loads(line)["loss"] for line in log]


def test_logits_match_peft_and_folder_is_peft_format(backend, task, tmp_path):
    g = torch.Generator().manual_seed(1)
    prompt = initial_prompt(backend, task, SoftPromptConfig(n_virtual=N), 0)
    adapter = make_adapter(backend, task, prompt + 0.5 * torch.randn(prompt.shape, generator=g))
    folder = save_adapter(adapter, tmp_path / "sp", card={})
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.json", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        assert list(f.keys()) == ["prompt_embeddings"]
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("prompt_embeddings").shape == (N, 32)  # (n_virtual, hidden)
        assert f.get_tensor("prompt_embeddings").dtype == torch.float32
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert {k: saved[k] for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim",
                                  "num_layers", "num_attention_heads",
                                  "num_transformer_submodules", "prompt_tuning_init",
                                  "base_model_name_or_path", "inference_mode")} == {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": N,
        "token_dim": 32, "num_layers": 2, "num_attention_heads": 4,
        "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": "test/tiny-llama", "inference_mode": True}

    prompts = [adapter.prompt(e) for e in task.examples]
    ours = label_scores(backend, adapter, task)
    theirs = peft_label_scores(backend, folder, prompts, adapter.continuations(task))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(label_scores(backend, adapter, task, batch_size=3), ours, atol=1e-5)


def test_training_loss_and_gradient_match_peft(backend, task):
    """Our loss (virtual cache once, repeated for the batch) equals PEFT's prompt-tuning forward
    (vectors concatenated to every row), and so does the gradient on the vectors."""
    from peft import PromptTuningConfig

    g = torch.Generator().manual_seed(2)
    prompt = torch.randn(N, 32, generator=g)
    rows = encode_rows(backend, resolve("text_label", task), task)
    batch = collate(rows[::3], pad_id=backend.tokenizer.pad_token_id)  # rows of unequal length
    trainable = SoftPromptTrainable(backend.model, prompt)
    with frozen(backend.model):
        loss, n = trainable.loss(batch)
        loss.backward()
    want_loss, want_grad = peft_loss_and_grad(
        backend, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N), prompt, batch)
    assert n == int(batch.target_mask.sum())
    torch.testing.assert_close(loss.detach(), want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trainable.prompt.grad, want_grad, atol=1e-5, rtol=1e-4)


def test_training_lowers_loss_and_leaves_the_base_alone(backend, task, trained):
    before, after, weights, flags, losses = trained
    assert len(losses) == 3 * 4  # 16 rows in batches of 4, 3 epochs
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2
    # the kept prompt (the best on validation) says the labels' words more readily than its start
    gold = [task.labels.index(e.label) for e in task.examples]

    def gold_logprob(adapter):
        return label_scores(backend, adapter, task)[np.arange(len(gold)), gold].mean()

    assert gold_logprob(after) > gold_logprob(before) + 1.0
    assert after.trainable_params == N * 32
    for name, p in backend.model.named_parameters():
        assert torch.equal(p, weights[name]), name
    assert flags[0] == flags[1] and not flags[1]["lm_head.weight"] and flags[1]["model.norm.weight"]


def test_save_load_round_trip_is_bit_exact(backend, task, trained, tmp_path):
    adapter = trained[1]
    folder = save_adapter(adapter, tmp_path / "sp", card={"note": "test"})
    loaded = load_adapter(folder)
    assert loaded.method == "soft_prompt" and loaded.config == adapter.config
    assert torch.equal(loaded.prompt_embeddings, adapter.prompt_embeddings)
    assert loaded.trainable_params == adapter.trainable_params
    assert np.array_equal(label_scores(backend, loaded, task), label_scores(backend, adapter, task))
    assert loaded.train_result == adapter.train_result


def test_load_refuses_pickled_weights(trained, tmp_path):
    folder = save_adapter(trained[1], tmp_path / "sp", card={})
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(TailorError, match="safetensors only"):
        load_adapter(folder)


def test_labels_init_is_the_label_words_embeddings_cycled(backend, task):
    ids = [i for words in (" negative", " positive") for i in backend.encode(words)]
    for n in (3, len(ids) + 2):
        got = initial_prompt(backend, task, SoftPromptConfig(n_virtual=n), seed=0)
        want = backend.model.get_input_embeddings().weight[[ids[i % len(ids)] for i in range(n)]]
        assert torch.equal(got, want)


def test_text_init_repeats_the_text(backend, task):
    ids = backend.encode("a great film")
    got = initial_prompt(backend, task, SoftPromptConfig(n_virtual=7, init="text",
                                                         init_text="a great film"), seed=0)
    assert torch.equal(got, backend.model.get_input_embeddings().weight[
        [ids[i % len(ids)] for i in range(7)]])


def test_vocab_init_is_seeded_real_rows_without_special_tokens(backend, task):
    config = SoftPromptConfig(n_virtual=16, init="vocab")
    a, b = (initial_prompt(backend, task, config, seed=s) for s in (0, 1))
    assert torch.equal(a, initial_prompt(backend, task, config, seed=0)) and not torch.equal(a, b)
    table = backend.model.get_input_embeddings().weight
    rows = [int((table == row).all(-1).nonzero()[0]) for row in a]
    assert not set(rows) & set(backend.tokenizer.all_special_ids)
    # a generation task has no label words: labels init falls back to vocab
    gen = Task("gen", "generation", [Example("2+2", "4")])
    config = SoftPromptConfig(n_virtual=16, template="input_output")
    assert torch.equal(initial_prompt(backend, gen, config, seed=0), a)


@pytest.mark.parametrize("values, message", [
    ({"n_virtual": 0}, "n_virtual must be a whole number of at least 1"),
    ({"n_virtual": 2.5}, "n_virtual must be a whole number"),
    ({"init": "random"}, "init must be one of labels, text, vocab"),
    ({"init": "text"}, "init: text needs init_text"),
    ({"lr": 0}, "lr must be above 0"),
    ({"n_virtal": 4}, "unknown option.*valid options"),
])
def test_config_errors_say_how_to_fix(values, message):
    with pytest.raises(TailorError, match=message):
        SoftPromptConfig.from_dict(values)


def test_default_config_is_the_documented_one():
    config = SoftPromptConfig()
    assert (config.n_virtual, config.init, config.lr) == (20, "labels", 3e-2)
    assert SoftPromptConfig.from_dict(config.to_dict()) == config


def test_bind_refuses_another_base_model(backend, task):
    from transformers import LlamaConfig, LlamaForCausalLM

    adapter = make_adapter(backend, task, torch.zeros(N, 32))
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=48, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4,
                                        num_key_value_heads=2))
    with pytest.raises(TailorError, match="use it with its own base model"):
        adapter.bind(backend.with_model(wide))
