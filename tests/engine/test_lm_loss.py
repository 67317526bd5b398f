import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_backend
from tailorlm.engine.lm_loss import encode_example, target_loss
from tailorlm.engine.train import collate


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def reference_loss(model, input_ids, attention_mask, target_mask, **kw):
    """The obvious way: every position's logits from model(...), then CE on the target tokens."""
    logits = model(input_ids=None if "inputs_embeds" in kw else input_ids,
                   attention_mask=attention_mask, **kw).logits  # (B, T, V)
    mask = target_mask[:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][mask].float(), input_ids[:, 1:][mask]), int(mask.sum())


def rows(backend):
    pairs = [("Review: a great film\nSentiment:", " positive"),
             ("Review: the worst movie I have seen in years\nSentiment:", " negative"),
             ("Question: what is two plus two? Answer:", " four")]
    return [encode_example(backend, p, t) for p, t in pairs]


def test_encode_example_masks_target_and_eos(backend):
    ids, mask = encode_example(backend, "Question: two plus two? Answer:", " four")
    prompt, target = backend.encode("Question: two plus two? Answer:"), backend.encode(" four")
    assert ids == prompt + target + [backend.tokenizer.eos_token_id]
    assert mask == [0] * len(prompt) + [1] * (len(target) + 1)


def test_matches_full_logits(backend):
    model = backend.model
    batch = collate(rows(backend), pad_id=backend.tokenizer.pad_token_id)  # right-padded
    with torch.no_grad():
        got, n = target_loss(model, batch.input_ids, batch.attention_mask, batch.target_mask)
        want, n_want = reference_loss(model, batch.input_ids, batch.attention_mask,
                                      batch.target_mask)
    assert n == n_want == sum(sum(m) for _, m in rows(backend))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_matches_full_logits_with_inputs_embeds_and_positions(backend):
    model = backend.model
    batch = collate(rows(backend), pad_id=0)
    B, T = batch.input_ids.shape
    g = torch.Generator().manual_seed(0)
    virtual = torch.randn(B, 3, model.config.hidden_size, generator=g)  # (B, 3, C)
    embeds = torch.cat([virtual, model.get_input_embeddings()(batch.input_ids)], 1)  # (B, 3+T, C)
    ids = torch.cat([torch.zeros(B, 3, dtype=torch.long), batch.input_ids], 1)
    attn = torch.cat([torch.ones(B, 3, dtype=torch.long), batch.attention_mask], 1)
    tmask = torch.cat([torch.zeros(B, 3, dtype=torch.long), batch.target_mask], 1)
    positions = torch.arange(3 + T).expand(B, -1) + 5
    with torch.no_grad():
        got, n = target_loss(model, ids, attn, tmask, inputs_embeds=embeds, position_ids=positions)
        want, n_want = reference_loss(model, ids, attn, tmask, inputs_embeds=embeds,
                                      position_ids=positions)
    assert n == n_want
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_matches_full_logits_after_a_cached_prefix(backend):
    model = backend.model
    prefix = torch.tensor([backend.encode("the cat sat on the mat")])  # (1, P)
    ids, mask = rows(backend)[0]
    input_ids, target_mask = torch.tensor([ids]), torch.tensor([mask])
    attn = torch.ones(1, prefix.shape[1] + len(ids), dtype=torch.long)
    with torch.no_grad():
        cache = model(prefix, use_cache=True).cache
        got, _ = target_loss(model, input_ids, attn, target_mask, cache=cache)
        cache = model(prefix, use_cache=True).cache
        want, _ = reference_loss(model, input_ids, attn, target_mask, cache=cache)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gradients_flow_and_empty_targets(backend):
    model = backend.model
    batch = collate(rows(backend)[:1])
    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    loss, _ = target_loss(model, batch.input_ids, batch.attention_mask, batch.target_mask,
                          inputs_embeds=embeds)
    loss.backward()
    assert embeds.grad.abs().sum() > 0

    none, n = target_loss(model, batch.input_ids, batch.attention_mask,
                          torch.zeros_like(batch.target_mask))
    assert n == 0 and none.item() == 0.0
