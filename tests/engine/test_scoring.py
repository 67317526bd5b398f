import numpy as np
import pytest
import torch

from helpers import reference_scores, tiny_backend
from tailorlm.engine import scoring
from tailorlm.engine.prompt import Prompt
from tailorlm.engine.scoring import score_labels

TEXTS = ["the cat sat on the mat", "a dog ran", "positive review: a great film, I loved it",
         "what is two plus two?", "the park"]
MULTI = [" four", " a great film", " the cat sat on the mat", " dog"]  # 1 to many tokens


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_matches_one_forward_per_label(backend, batch_size):
    prompts = [Prompt("Q: ", t + "\nA:") for t in TEXTS]
    got = score_labels(backend, prompts, MULTI, batch_size=batch_size)
    want = reference_scores(backend, prompts, MULTI)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_shared_and_unshared_prompts_score_the_same(backend):
    shared = [Prompt("Q: the cat sat on the mat\nA: four\n", t) for t in TEXTS]
    unshared = [Prompt("", p.shared + p.own) for p in shared]
    a = score_labels(backend, shared, MULTI, batch_size=2)
    b = score_labels(backend, unshared, MULTI, batch_size=2)
    # the same token ids either way when the split falls on a token boundary, as here ("\n")
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_mixed_groups_keep_input_order(backend):
    prompts = [Prompt("A: " if i % 2 else "B: ", t) for i, t in enumerate(TEXTS)]
    got = score_labels(backend, prompts, MULTI, batch_size=2)
    want = reference_scores(backend, prompts, MULTI)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_label_rows_chunked(backend, monkeypatch):
    monkeypatch.setattr(scoring, "MAX_TREE_POSITIONS", 4)  # one label subtree per chunk
    prompts = [Prompt("", t) for t in TEXTS]
    got = score_labels(backend, prompts, MULTI, batch_size=4)
    np.testing.assert_allclose(got, reference_scores(backend, TEXTS, MULTI), atol=1e-4)


SHARED = [" the cat", " the cat sat on the mat", " the dog ran", " a dog", " a dog ran", " four"]


@pytest.mark.parametrize("positions", [2048, 3])
def test_labels_that_share_words_share_trie_nodes(backend, monkeypatch, positions):
    """Prefixes shared, a label that is another's prefix, one-token labels; in one chunk and
    in one subtree per chunk."""
    monkeypatch.setattr(scoring, "MAX_TREE_POSITIONS", positions)
    prompts = [Prompt("Q: ", t + "\nA:") for t in TEXTS]
    got = score_labels(backend, prompts, SHARED, batch_size=3)
    np.testing.assert_allclose(got, reference_scores(backend, prompts, SHARED), atol=1e-4)
    tree = scoring.LabelTree([backend.encode(c) for c in SHARED])
    unshared = sum(len(backend.encode(c)) - 1 for c in SHARED)
    assert len(tree.tokens) < unshared  # " the", " the cat", " a", " a dog" run once


def test_token_count(backend):
    prompts = [Prompt("Q: ", t) for t in TEXTS[:2]]
    counted = []
    score_labels(backend, prompts, [" dog"], on_tokens=counted.append)
    label_forward = 2 * (len(backend.encode(" dog")) - 1)  # all but the last label token, per row
    want = len(backend.encode("Q: ")) + sum(len(backend.encode(t)) for t in TEXTS[:2]) \
        + label_forward
    assert sum(counted) == want


def test_empty_query_refused(backend):
    with pytest.raises(ValueError, match="must not be empty"):
        score_labels(backend, [Prompt("x", "")], [" dog"])


def test_unshared_prefix_gives_the_same_ids_and_scores(backend):
    prompts = [Prompt("Q: the cat", t) for t in TEXTS]  # "cat" + text: a split mid-word
    shared = score_labels(backend, prompts, MULTI, batch_size=2)
    unshared = score_labels(backend, prompts, MULTI, batch_size=2, share_prefix=False)
    np.testing.assert_allclose(shared, unshared, atol=1e-4)
    np.testing.assert_allclose(unshared, reference_scores(backend, prompts, MULTI), atol=1e-4)


def test_virtual_prefix_scores_as_its_tokens_written_first(backend):
    """A virtual prefix holding real tokens' key/values (V positions) scores like those tokens as
    text before every prompt, with and without shared parts, in any batch size."""
    virtual_ids = backend.encode("Q: the cat sat")

    def virtual():
        with torch.no_grad():
            out = backend.model(torch.tensor([virtual_ids]), use_cache=True)
        return out.cache, len(virtual_ids)

    bound = backend.with_virtual_prefix(virtual)
    prompts = [Prompt("A: " if i % 2 else "", t) for i, t in enumerate(TEXTS)]
    want = np.zeros((len(prompts), len(MULTI)))
    with torch.no_grad():  # one forward per (prompt, label) over all the ids, written out
        for i, p in enumerate(prompts):
            shared = backend.encode(p.shared) if p.shared else []
            ids = virtual_ids + shared + backend.encode(p.own)
            for j, cont in enumerate(MULTI):
                c = backend.encode(cont)
                logits = backend.model(torch.tensor([ids + c])).logits[0].double()
                logp = torch.log_softmax(logits, -1)
                want[i, j] = sum(logp[len(ids) - 1 + t, c[t]].item() for t in range(len(c)))
    for batch_size in (1, 3):
        np.testing.assert_allclose(score_labels(bound, prompts, MULTI, batch_size=batch_size),
                                   want, atol=1e-4)
    np.testing.assert_allclose(score_labels(bound, prompts, MULTI, share_prefix=False), want,
                               atol=1e-4)
