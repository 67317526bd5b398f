"""Fixtures every test shares: a private TAILORLM_HOME, no kept fits, and a tiny offline model.

No test touches the user's home: each gets its own TAILORLM_HOME under pytest's tmp_path. The
integration tests instead share one home for the whole session (`smollm2_home`), so the built-in
model is converted from GGUF once per run, not once per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "positive review: a great film, I loved it",
    "negative review: a bad film, I hated it",
    "Question: what is two plus two? Answer: four",
]


@pytest.fixture(autouse=True)
def tailorlm_home(request, tmp_path, monkeypatch) -> Path:
    if "smollm2_home" in request.fixturenames:
        home = request.getfixturevalue("smollm2_home")
    else:
        home = tmp_path / "tailorlm_home"
    monkeypatch.setenv("TAILORLM_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_kept_fits():
    """Each test starts with no fit kept from another (methods/fit_memo.py)."""
    from tailorlm.methods import fit_memo

    fit_memo.clear()
    yield
    fit_memo.clear()


@pytest.fixture
def fit_calls(monkeypatch):
    """Every registered method's fit wrapped to count its calls, by name; hybrid specs are
    rebuilt on the counting fits."""
    import dataclasses

    from tailorlm.methods import METHODS, hybrid

    calls = {}

    def counting(spec):
        def fit(*args, **kwargs):
            calls[spec.name] = calls.get(spec.name, 0) + 1
            return spec.fit(*args, **kwargs)
        return dataclasses.replace(spec, fit=fit)

    for name, spec in list(METHODS.items()):
        monkeypatch.setitem(METHODS, name, counting(spec))
    hybrid.hybrid_spec.cache_clear()
    yield calls
    hybrid.hybrid_spec.cache_clear()


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory) -> Path:
    """A TAILORLM_HOME shared by the integration tests: request it to use it."""
    return tmp_path_factory.mktemp("smollm2_home")


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on TINY_TEXTS: 300 tokens, <s> = 0, </s> = 1, no pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def build_tiny_llama(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with hidden size 32, random weights, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A transformers model folder (safetensors) holding a tiny Llama and its BPE tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
