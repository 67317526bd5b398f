"""The loss every trainable method minimises: cross-entropy on the target tokens only.

An example is a prompt x followed by a target y (and EOS). Training maximises log p(y | x):

    loss = -(1/N) sum_{t in target} log p(ids[t] | ids[<t])        N = number of target tokens

The prompt tokens are context, never predicted. Token t is predicted from the hidden state at t-1,
so the LM head is needed only at the positions whose *next* token is a target:

    ids          <s> the film was great ▸ positive </s> <pad>
    target_mask   0   0    0   0    0   0    1      1     0
    head at           .    .   .    .   ✓    ✓            (rows gathered from the decoder's output)

The head is a (hidden, vocab) matmul at every position it runs on; for a 49k-token vocabulary on a
short target that is most of a step's compute and memory, so we run the decoder alone and apply
the head to those gathered rows, instead of calling `model(...)` and discarding most of its logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tailorlm.models.backend import Backend


def target_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_mask: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                cache=None, inputs_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens, and how many there were.

    `model` is a transformers causal LM (`get_decoder()` and `get_output_embeddings()`). All of
    input_ids, attention_mask and target_mask are (B, T). When `inputs_embeds` (B, T, C) is given
    the model reads it instead of the ids, and `input_ids` supplies only the labels: a method that
    prepends virtual tokens puts any id there with target_mask 0. `cache` (a key/value prefix) and
    `position_ids` pass straight to the decoder; then attention_mask covers prefix + T, as usual.
    A batch with no target tokens returns a zero loss that still has a graph (backward is a no-op).
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if inputs_embeds is not None:
        out = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      position_ids=position_ids, cache=cache, use_cache=False)
    else:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids, cache=cache, use_cache=False)
    hidden = out.last_hidden_state  # (B, T, C)
    predicted = target_mask[:, 1:].bool()  # (B, T-1): position t-1 predicts token t
    rows = hidden[:, :-1][predicted]  # (N, C)
    labels = input_ids[:, 1:][predicted]  # (N,)
    logits = head(rows)  # (N, V)
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:  # Gemma 2/3 squash their logits; model(...) does the same after the head
        logits = torch.tanh(logits / softcap) * softcap
    n = int(labels.numel())
    if n == 0:
        return logits.sum() * 0.0, 0
    # Cross-entropy in float32 even under bf16 autocast: log-softmax over a large vocab in bf16
    # loses about 2-3 significant digits of the loss.
    return F.cross_entropy(logits.float(), labels), n


def encode_example(backend: Backend, prompt_text: str,
                   target_text: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + target + EOS, and a mask that is 1 on the target and EOS tokens.

    Prompt and target are tokenized apart, as at scoring time (engine/scoring.py), so the target's
    tokens are the ones the model is later asked to score; tokenizing the joined text could merge
    the boundary into one token that the model never sees in evaluation. No BOS is added: a
    prompt that wants one starts with `backend.bos_text`, as templates do.
    """
    prompt, target = backend.encode(prompt_text), backend.encode(target_text)
    eos = getattr(backend.tokenizer, "eos_token_id", None)
    if eos is not None:
        target = target + [eos]
    return prompt + target, [0] * len(prompt) + [1] * len(target)
