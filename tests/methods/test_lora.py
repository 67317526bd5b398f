import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_llama
from helpers import reference_scores, sentiment_task, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.engine.lm_loss import target_loss
from tailorlm.engine.train import collate
from tailorlm.errors import TailorError
from tailorlm.methods import get_method
from tailorlm.methods.artifact import load_adapter, save_adapter
from tailorlm.methods.lora import LoraConfig, export_merged, max_lora_rank
from tailorlm.methods.templates import resolve
from tailorlm.methods.trainable import encode_rows

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IDS = torch.tensor([[5, 17, 42, 9, 100, 3, 250, 77]])


def fast(**overrides) -> LoraConfig:
    base = dict(epochs=4, batch_size=4, lr=1e-2, bf16=False, template="text_label")
    return LoraConfig(**{**base, **overrides})


def mean_loss(backend, adapter, task) -> float:
    bound = adapter.bind(backend) if adapter is not None else backend
    rows = encode_rows(backend, resolve("text_label", task), task)
    batch = collate(rows, backend.tokenizer.pad_token_id)
    with torch.no_grad():
        loss, _ = target_loss(bound.model, batch.input_ids, batch.attention_mask,
                              batch.target_mask)
    return loss.item()


def sharpen(model):
    """Random tiny logits are nearly flat (std ~0.1): a sharper head gives LoRA a grip."""
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny backend, a snapshot of its weights before the fit, and the fitted adapter."""
    backend = tiny_backend()
    sharpen(backend.model)
    before = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in backend.model.named_parameters()}
    task = sentiment_task(6)
    adapter = get_method("lora").fit(backend, task, None, fast(), seed=0,
                                     work_dir=tmp_path_factory.mktemp("lora-train"))
    return backend, before, flags, adapter, task


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    backend, _, _, adapter, _ = fitted
    folder = tmp_path_factory.mktemp("lora-saved") / "a"
    save_adapter(adapter, folder, {"base_model": backend.identity})
    return folder


def test_config_validates_and_says_how_to_fix():
    assert LoraConfig().lr == 1e-3 and LoraConfig().target_modules == SEVEN
    with pytest.raises(TailorError, match=r"r must be a whole number >= 1"):
        LoraConfig(r=0)
    assert LoraConfig(r=5).r == 5  # any rank trains; the card says what serving it needs
    with pytest.raises(TailorError, match="alpha"):
        LoraConfig(alpha=0)
    with pytest.raises(TailorError, match="dropout"):
        LoraConfig(dropout=1.0)
    with pytest.raises(TailorError, match="all-linear"):
        LoraConfig(target_modules=[])
    with pytest.raises(TailorError, match="unknown option"):
        LoraConfig.from_dict({"rank": 8})
    assert LoraConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert LoraConfig.from_dict({"target_modules": "all-linear"}).target_modules == "all-linear"
    assert [max_lora_rank(r) for r in (1, 8, 9, 24, 256, 300, 512, 513)] == \
        [8, 8, 16, 32, 256, 320, 512, None]


def test_unknown_target_modules_is_a_user_error():
    backend = tiny_backend()
    with pytest.raises(TailorError, match="match no layer"):
        get_method("lora").fit(backend, sentiment_task(2), None,
                               fast(epochs=1, target_modules=["nope_proj"]), seed=0)


def test_fit_trains_lora_only_and_leaves_the_base_untouched(fitted):
    backend, before, flags, adapter, task = fitted
    for n, p in backend.model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad == flags[n], n
    assert not any("lora" in n for n, _ in backend.model.named_modules())
    # r * (in + out) per projection: q, o 32x32; k, v 32->16; gate, up 32->64; down 64->32
    per_layer = 8 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 3)
    assert adapter.trainable_params == 2 * per_layer == 8192
    assert adapter.train_result["optimizer_bytes"] == 8 * 8192
    assert adapter.train_result["trainable_params"] == 8192
    bound = adapter.bind_unmerged(backend)
    assert bound.model is not backend.model and bound.identity == backend.identity
    assert adapter.bind_unmerged(backend).model is bound.model  # built once
    lora_b = [p for n, p in bound.model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 14 and all(p.abs().max() > 0 for p in lora_b)
    merged = adapter.bind(backend)
    assert merged.model is not backend.model and adapter.bind(backend).model is merged.model


def test_bind_computes_with_merged_weights_over_the_shared_base(fitted):
    """bind() folds B A into each adapted layer: no LoRA layer runs, the logits match PEFT's
    unmerged layers within 1e-4, and only the adapted layers' weights are new memory."""
    backend, before, _, adapter, task = fitted
    merged = adapter.bind(backend).model
    assert not any("lora" in n for n, _ in merged.named_modules())
    with torch.no_grad():
        unmerged = adapter.bind_unmerged(backend).model(IDS).logits
        base = backend.model(IDS).logits
        logits = merged(IDS).logits
    assert (unmerged - base).abs().max() > 1e-2
    torch.testing.assert_close(logits, unmerged, atol=1e-4, rtol=0)
    np.testing.assert_allclose(label_scores(backend, adapter, task),
                               label_scores(backend, adapter.reworded(adapter.template), task),
                               atol=0)  # a reworded copy shares the merged model
    shared = {p.data_ptr() for p in backend.model.parameters()}
    own = [n for n, p in merged.named_parameters() if p.data_ptr() not in shared]
    assert len(own) == 2 * 7 and all(n.endswith("_proj.weight") for n in own)  # 7 per layer
    assert not any(p.requires_grad for p in merged.parameters())
    for n, p in backend.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_training_lowers_the_target_loss(fitted):
    backend, _, _, adapter, task = fitted
    base, tuned = mean_loss(backend, None, task), mean_loss(backend, adapter, task)
    assert tuned < base - 0.5, (base, tuned)


def test_folder_holds_exactly_the_peft_files_vllm_accepts(fitted, saved):
    backend, *_ = fitted
    assert sorted(p.name for p in saved.iterdir()) == [
        "adapter.json", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    cfg = json.loads((saved / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert cfg["bias"] == "none" and cfg["use_dora"] is False
    assert cfg["modules_to_save"] is None and cfg["inference_mode"] is True
    assert cfg["base_model_name_or_path"] == backend.identity == "test/tiny-llama"
    assert sorted(cfg["target_modules"]) == sorted(SEVEN)
    assert not cfg.get("lora_bias") and not cfg.get("layer_replication")
    tensors = load_file(saved / "adapter_model.safetensors")
    assert len(tensors) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    pattern = re.compile(r"^base_model\.model\.model\.layers\.\d\.(self_attn|mlp)\.\w+_proj"
                         r"\.lora_[AB]\.weight$")
    assert all(pattern.match(k) for k in tensors), sorted(tensors)[:3]


def test_peft_loads_our_folder_and_computes_the_same_logits(fitted, saved):
    from peft import PeftModel

    backend, _, _, adapter, _ = fitted
    with torch.no_grad():
        ours = adapter.bind(backend).model(IDS).logits
        base = backend.model(IDS).logits
        fresh = sharpen(build_tiny_llama(len(backend.tokenizer), seed=0))  # same base, rebuilt
        theirs = PeftModel.from_pretrained(fresh, saved).eval()(input_ids=IDS).logits
    assert (ours - base).abs().max() > 1e-2  # the adapter does something, so parity can fail
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_round_trip_scores_bit_exact(fitted, saved):
    backend, _, _, adapter, task = fitted
    again = load_adapter(saved)
    assert again.method == "lora" and again.config == adapter.config
    assert again.peft_model is None  # weights are read when bound
    scores = label_scores(backend, adapter, task)
    np.testing.assert_array_equal(label_scores(backend, again, task), scores)
    raw = reference_scores(again.bind(backend), [adapter.prompt(e) for e in task.examples],
                           adapter.continuations(task))
    np.testing.assert_allclose(raw, scores, atol=1e-4)
    assert again.trainable_params == adapter.trainable_params


def test_resaving_a_loaded_adapter_copies_its_files(saved, tmp_path):
    again = load_adapter(saved)
    save_adapter(again, tmp_path / "b", {})
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "b" / name).read_bytes() == (saved / name).read_bytes()


def test_loading_refuses_a_folder_without_safetensors(saved, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(saved, copy)
    (copy / "adapter_model.safetensors").rename(copy / "adapter_model.bin")
    with pytest.raises(TailorError, match="safetensors only"):
        load_adapter(copy)


def test_merged_equals_unmerged_and_exports_a_transformers_folder(fitted, saved, tmp_path):
    from transformers import AutoModelForCausalLM

    backend, before, _, adapter, _ = fitted
    merged = adapter.merge(backend)
    assert not any("lora" in n for n, _ in merged.named_modules())
    with torch.no_grad():
        unmerged = adapter.bind(backend).model(IDS).logits
        torch.testing.assert_close(merged(IDS).logits, unmerged, atol=1e-4, rtol=0)
        # merging a loaded adapter (weights from the folder) gives the same model
        loaded = load_adapter(saved).merge(backend)
        torch.testing.assert_close(loaded(IDS).logits, unmerged, atol=1e-4, rtol=0)
    for n, p in backend.model.named_parameters():
        assert torch.equal(p, before[n]), n  # merging wrote into a copy

    out = export_merged(adapter, backend, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    reloaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, unmerged, atol=1e-4, rtol=0)
    with pytest.raises(TailorError, match="not empty"):
        export_merged(adapter, backend, out)
