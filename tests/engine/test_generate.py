"""Batched, cached greedy generation equals the plainest greedy loop, token for token.

The reference feeds each prompt's full sequence (shared ids + own ids + tokens so far) through the
model at every step, one prompt at a time, with no cache and no padding. The tokenizer is a word-level
one, so each token decodes to one distinct word: equal texts mean equal tokens.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tailorlm.engine.generate import generate
from tailorlm.engine.prompt import Prompt
from tailorlm.models.backend import LocalBackend

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "positive review : a great film , I loved it",
    "negative review : a bad film , I hated it",
    "Question : what is two plus two ? Answer : four",
]

PROMPTS = [
    Prompt("", "the cat"),
    Prompt("", "a dog ran in the park and the cat sat on the"),
    Prompt("Question : what is two plus two ? Answer : four", " Question : what is"),
    Prompt("Question : what is two plus two ? Answer : four", " review :"),
    Prompt("Question : what is two plus two ? Answer : four", " a great film , I loved it"),
    Prompt("positive review :", " a bad film"),
    Prompt("", "Answer :"),
]


@pytest.fixture
def backend() -> LocalBackend:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=0, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    return LocalBackend("tiny", "tiny", "0" * 64, model, tokenizer, "")


def greedy_reference(backend: Backend, prompt: Prompt, max_new_tokens: int, stop, eos):
    """(stripped text, number of tokens picked including an end-of-sequence one)."""
    ids = (backend.encode(prompt.shared) if prompt.shared else []) + backend.encode(prompt.own)
    picked, text = [], ""
    for k in range(1, max_new_tokens + 1):
        with torch.no_grad():
            t = int(backend.model(torch.tensor([ids + picked])).logits[0, -1].argmax())
        if t in eos:
            return text.strip(), k
        picked.append(t)
        text = backend.tokenizer.decode(picked, skip_special_tokens=True)
        cuts = [text.find(s) for s in stop if s in text]
        if cuts:
            return text[:min(cuts)].strip(), k
    return text.strip(), max_new_tokens


def expected_tokens(backend: Backend, prompts, picks) -> int:
    """Shared prefixes once each, every own token once, then every picked token but the last."""
    shared = sum(len(backend.encode(s)) for s in {p.shared for p in prompts} if s)
    own = sum(len(backend.encode(p.own)) for p in prompts)
    return shared + own + sum(k - 1 for k in picks)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_matches_unbatched_uncached_greedy(backend, batch_size):
    counted, picked = [], []
    out = generate(backend, PROMPTS, max_new_tokens=12, stop=(), batch_size=batch_size,
                   on_tokens=counted.append, on_generated=picked.append)
    ref = [greedy_reference(backend, p, 12, (), {2}) for p in PROMPTS]
    assert out == [text for text, _ in ref]
    assert sum(counted) == expected_tokens(backend, PROMPTS, [k for _, k in ref])
    assert sum(picked) == sum(k for _, k in ref)  # tokens generated, end-of-sequence included
    assert len({text for text in out}) > 3  # the tiny model does not say the same thing to all


def test_max_new_tokens_is_respected(backend):
    out = generate(backend, PROMPTS, max_new_tokens=5, stop=(), batch_size=4)
    ref = [greedy_reference(backend, p, 5, (), {2}) for p in PROMPTS]
    assert out == [text for text, _ in ref]
    assert all(len(text.split()) <= 5 for text in out)
    assert any(len(text.split()) == 5 for text in out)


def test_stop_strings_cut_the_text(backend):
    full = generate(backend, PROMPTS, max_new_tokens=12, stop=(), batch_size=3)
    words = full[1].split()
    assert len(words) >= 4
    stop = (f" {words[3]}", "never appears")  # cut before the 4th word (or earlier where it repeats)
    out = generate(backend, PROMPTS, max_new_tokens=12, stop=stop, batch_size=3)
    ref = [greedy_reference(backend, p, 12, stop, {2}) for p in PROMPTS]
    assert out == [text for text, _ in ref]
    assert out[1] == full[1][:full[1].find(stop[0])].strip()
    assert len(out[1].split()) <= 3
    for o, f in zip(out, full):
        assert f.startswith(o)


def test_generation_config_eos_list_stops_rows(backend):
    full = generate(backend, PROMPTS, max_new_tokens=12, stop=(), batch_size=3)
    extra = backend.tokenizer.convert_tokens_to_ids(full[1].split()[2])
    backend.model.generation_config.eos_token_id = [2, extra]
    counted = []
    out = generate(backend, PROMPTS, max_new_tokens=12, stop=(), batch_size=3,
                   on_tokens=counted.append)
    ref = [greedy_reference(backend, p, 12, (), {2, extra}) for p in PROMPTS]
    assert out == [text for text, _ in ref]
    assert out[1] == " ".join(full[1].split()[:2])
    assert sum(counted) == expected_tokens(backend, PROMPTS, [k for _, k in ref])


def test_empty_own_is_refused(backend):
    with pytest.raises(ValueError, match="own must not be empty"):
        generate(backend, [Prompt("the cat", "")])


def test_virtual_prefix_generates_as_its_tokens_written_first(backend):
    """A virtual prefix of real tokens' key/values generates as those words written first."""
    text = "negative review : a bad film"
    ids = backend.encode(text)

    def virtual():
        with torch.no_grad():
            return backend.model(torch.tensor([ids]), use_cache=True).cache, len(ids)

    out = generate(backend.with_virtual_prefix(virtual), PROMPTS, max_new_tokens=8, stop=(),
                   batch_size=3)
    # word-level tokens: "<text> <shared>" + own encodes to ids + shared ids + own ids
    ref = [greedy_reference(backend, Prompt(f"{text} {p.shared}", p.own), 8, (), {2})
           for p in PROMPTS]
    assert out == [t for t, _ in ref]
    assert out != generate(backend, PROMPTS, max_new_tokens=8, stop=(), batch_size=3)
