"""BOS where the tokenizer adds one: prompts, scores and training rows read what tokenizer(text)
gives, checked against a plain transformers forward over tokenizer(text) with special tokens."""

import numpy as np
import pytest
import torch

from helpers import tiny_backend
from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt, encode_prompt, prompt_ids
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.templates import CLASSIFICATION
from tailorlm.methods.trainable import encode_rows

PROMPTS = [Prompt("Review: a great film\n", "Text: the cat sat on the mat\nLabel:"),
           Prompt("", "the park\nLabel:"),
           Prompt("Review: a great film\n", "Text: a dog ran in the park\nLabel:")]
LABELS = [" positive", " negative review", " the cat"]


def with_bos(backend):
    """The tiny backend with a tokenizer that adds <s> (id 0) before text, as Gemma's does."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend.tokenizer.backend_tokenizer,
                                  bos_token="<s>", eos_token="</s>", add_bos_token=True)
    tok.pad_token = tok.eos_token
    backend.tokenizer = tok
    return backend


@pytest.fixture(scope="module")
def plain():
    return tiny_backend()


@pytest.fixture(scope="module")
def bos():
    return with_bos(tiny_backend())


def test_bos_ids_follow_what_the_tokenizer_does(plain, bos):
    assert plain.bos_ids == [] and plain.bos_text == ""
    assert bos.tokenizer("the cat")["input_ids"][0] == 0
    assert bos.bos_ids == [0] and bos.bos_text == "<s>"


def test_bos_goes_first_in_the_shared_part_even_when_it_is_empty(plain, bos):
    assert encode_prompt(bos, PROMPTS[1])[0] == [0]
    assert encode_prompt(plain, PROMPTS[1])[0] == []
    for p in PROMPTS:
        assert prompt_ids(bos, p) == bos.tokenizer(p.text)["input_ids"]  # as tokenizer(text)
        assert prompt_ids(plain, p) == plain.tokenizer(p.text)["input_ids"]


def reference(backend, prompt: Prompt, label: str) -> float:
    """log p(label | prompt) from one forward over tokenizer(text) with special tokens."""
    tok = backend.tokenizer
    context = tok(prompt.text)["input_ids"]
    ids = tok(prompt.text + label)["input_ids"]
    assert ids[:len(context)] == context  # the label starts on a token boundary
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(context), len(ids)))


def test_label_logprobs_equal_a_plain_forward_over_tokenizer_text(plain, bos):
    for backend in (bos, plain):
        got = score_labels(backend, PROMPTS, LABELS, batch_size=2)
        want = np.array([[reference(backend, p, c) for c in LABELS] for p in PROMPTS])
        np.testing.assert_allclose(got, want, atol=1e-4)
    # and the BOS changes what the model computes: leaving it out would not pass the above
    assert np.abs(score_labels(bos, PROMPTS, LABELS) - score_labels(plain, PROMPTS, LABELS)).max() \
        > 1e-3


def test_training_rows_start_with_bos_where_the_tokenizer_adds_one(plain, bos):
    task = Task("t", "classification", [Example("a great film", "positive", "positive")])
    template = CLASSIFICATION["text_label"]
    (ids, mask), = encode_rows(bos, template, task)
    (plain_ids, plain_mask), = encode_rows(plain, template, task)
    assert ids == [0] + plain_ids and mask == [0] + plain_mask
    prompt = template.prompt(task, task.examples[0])
    assert ids[:len(ids) - sum(mask)] == bos.tokenizer(prompt.text)["input_ids"]
