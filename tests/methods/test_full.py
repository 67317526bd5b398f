import numpy as np
import pytest
import torch

from helpers import sentiment_task, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.lm_loss import target_loss
from tailorlm.engine.train import collate
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.full import FullConfig
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows

IDS = torch.tensor([[5, 17, 42, 9, 100, 3, 250, 77]])


def mean_loss(backend, task) -> float:
    rows = encode_rows(backend, resolve("text_label", task), task)
    batch = collate(rows, backend.tokenizer.pad_token_id)
    with torch.no_grad():
        loss, _ = target_loss(backend.model, batch.input_ids, batch.attention_mask,
                              batch.target_mask)
    return loss.item()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    backend = tiny_backend()
    before = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    task = sentiment_task(6)
    config = FullConfig(epochs=4, batch_size=4, lr=1e-2, bf16=False, template="text_label")
    adapter = get_method("full").fit(backend, task, None, config, seed=0,
                                     work_dir=tmp_path_factory.mktemp("full-train"))
    return backend, before, adapter, task


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    backend, _, adapter, _ = fitted
    folder = tmp_path_factory.mktemp("full-saved") / "a"
    save_adapter(adapter, folder, {"base_model": backend.identity})
    return folder


def test_config_defaults_and_errors():
    assert FullConfig().lr == 2e-5
    with pytest.raises(TailorError, match="lr must be above 0"):
        FullConfig(lr=0)
    with pytest.raises(TailorError, match="unknown option"):
        FullConfig.from_dict({"r": 8})


def test_fit_trains_every_weight_of_a_copy(fitted):
    backend, before, adapter, task = fitted
    for n, p in backend.model.named_parameters():
        assert torch.equal(p, before[n]), n  # the base is untouched
    n_all = backend.total_params
    assert adapter.trainable_params == n_all == adapter.train_result["trainable_params"]
    assert adapter.train_result["optimizer_bytes"] == 8 * n_all
    bound = adapter.bind(backend)
    assert bound.model is not backend.model and bound.identity == backend.identity
    moved = [n for n, p in bound.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # every tensor trained
    assert mean_loss(bound, task) < mean_loss(backend, task) - 0.5


def test_folder_is_a_transformers_model_that_reloads_identically(fitted, saved):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend, _, adapter, _ = fitted
    names = {p.name for p in saved.iterdir()}
    assert {"adapter.json", "card.json", "config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    reloaded = AutoModelForCausalLM.from_pretrained(saved, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert tokenizer("a great film")["input_ids"] == backend.tokenizer("a great film")["input_ids"]
    with torch.no_grad():
        ours = adapter.bind(backend).model(IDS).logits
        assert not torch.equal(ours, backend.model(IDS).logits)
        assert torch.equal(reloaded(IDS).logits, ours)


def test_round_trip_scores_bit_exact(fitted, saved, tmp_path):
    backend, _, adapter, task = fitted
    again = load_adapter(saved)
    assert again.method == "full" and again.config == adapter.config and again.model is None
    assert again.trainable_params == adapter.trainable_params
    np.testing.assert_array_equal(label_scores(backend, again, task),
                                  label_scores(backend, adapter, task))
    # a loaded adapter saved again, never bound, copies its model folder
    save_adapter(load_adapter(saved), tmp_path / "b", {})
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == \
        (saved / "model.safetensors").read_bytes()


def test_loading_refuses_a_folder_without_safetensors(saved, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(saved, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(TailorError, match="safetensors"):
        load_adapter(copy)
