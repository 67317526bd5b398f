"""Classification by label log-likelihood, with every shared piece of the prompt computed once.

For a prompt x and label verbalizations y_1..y_L, the score of label l is

    log p(y_l | x) = sum_j log p(y_l[j] | x, y_l[<j])

We never generate and parse. The expensive part is x, so it runs through the model once per query
and every label continuation is scored from its key/value cache; the part of x that many queries
share (instruction, fixed demonstrations) runs once per group of queries:

    virtual prefix (1, V) + shared ids (1, S) ─► cache ─┬─ expand to B rows ─► own ids (B, T),
                                                        │     left-padded ─► cache', and logits at
                                                        │     the last position: 1st label token
                                                        └─ cache' expanded to B*L rows
                                                              ─► label ids (B*L, M-1): later tokens

The virtual prefix is the key/values that a soft prompt or a prefix adapter puts before any text
(`Backend.virtual_prefix`, V positions; none for a plain model). Every group starts from a copy
of it and its shared ids continue at position V, so below n_shared = V + S counts both.

Only the first M-1 tokens of each label need a forward pass (the last one is only predicted), so
single-token label sets (sst2's " positive"/" negative") cost one forward per batch of queries.
Positions are passed explicitly, so left padding inside a batch does not shift them.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import torch

from tailorlm.engine.prompt import Prompt
from tailorlm.models.backend import Backend

# Rows of the label forward at once: B*L rows each hold a full copy of the prompt's cache, so
# rows x context length is bounded (about 46 kB per cached token for SmolLM2 in float32).
MAX_LABEL_ROWS = 256
MAX_LABEL_ROW_TOKENS = 32_768


@torch.inference_mode()
def score_labels(backend: Backend, prompts: list[Prompt], continuations: list[str], *,
                 batch_size: int = 16, on_tokens=None, share_prefix: bool = True) -> np.ndarray:
    """Sum of log-probabilities of each continuation after each prompt: shape (N, L), float64.

    `on_tokens(n)` is called with the number of tokens each forward pass processes (cost meter).
    `share_prefix=False` recomputes each prompt's shared part with its own (same token ids): the
    baseline the prefix cache is measured against.
    """
    encode = backend.encode
    labels = [encode(c) for c in continuations]
    if any(len(ids) == 0 for ids in labels):
        raise ValueError("a label continuation encodes to no tokens")
    scores = np.zeros((len(prompts), len(labels)), dtype=np.float64)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p.shared if share_prefix else ""].append(i)
    virtual = backend.virtual_prefix() if backend.virtual_prefix is not None else None
    for shared, idxs in groups.items():
        shared_cache, n_shared = shared_prefix(backend, virtual, encode(shared) if shared else [],
                                               on_tokens)
        own = {i: (encode(prompts[i].shared) if not share_prefix and prompts[i].shared else [])
               + encode(prompts[i].own) for i in idxs}
        if any(len(own[i]) == 0 for i in idxs):
            raise ValueError("Prompt.own must not be empty: it ends right before the answer")
        order = sorted(idxs, key=lambda i: len(own[i]))  # similar lengths together: less padding
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            scores[batch] = _score_batch(backend, shared_cache, n_shared,
                                         [own[i] for i in batch], labels, on_tokens)
    return scores


def shared_prefix(backend: Backend, virtual, shared_ids: list[int], on_tokens=None):
    """(cache, n_shared): the key/values of the virtual prefix, if any, then `shared_ids`.

    `virtual` is what `backend.virtual_prefix()` returned, (cache for one row, V), or None. It is
    copied before the shared ids extend it, so one virtual cache serves every group. Without shared
    ids the group's cache is the virtual cache itself (None for a plain model): `_expand` copies
    it before any forward pass writes to it.
    """
    cache, n_virtual = virtual if virtual is not None else (None, 0)
    if not shared_ids:
        return cache, n_virtual
    n_shared = n_virtual + len(shared_ids)
    device = backend.device
    out = backend.model(torch.tensor([shared_ids], device=device),
                        attention_mask=torch.ones((1, n_shared), dtype=torch.long, device=device),
                        position_ids=torch.arange(n_virtual, n_shared, device=device)[None],
                        cache=copy.deepcopy(cache), use_cache=True, logits_to_keep=1)
    _count(on_tokens, len(shared_ids))
    return out.cache, n_shared


def run_queries(backend, shared_cache, n_shared: int, own_ids: list[list[int]], on_tokens):
    """Each query's own ids after the shared cache, left-padded into one batch.

    Returns (output, attention mask (B, S+T), positions (B, T), own mask (B, T)); the output's
    logits are at the last position only, which is every row's last real token.
    """
    model, device = backend.model, backend.device
    pad = backend.tokenizer.pad_token_id or 0
    B, T = len(own_ids), max(len(ids) for ids in own_ids)
    input_ids = torch.full((B, T), pad, dtype=torch.long)
    own_mask = torch.zeros((B, T), dtype=torch.long)
    for b, ids in enumerate(own_ids):
        input_ids[b, T - len(ids):] = torch.tensor(ids)
        own_mask[b, T - len(ids):] = 1
    positions = (n_shared + own_mask.cumsum(-1) - 1).clamp(min=n_shared)  # (B, T)
    mask = torch.cat([torch.ones((B, n_shared), dtype=torch.long), own_mask], dim=1)  # (B, S+T)
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), cache=_expand(shared_cache, B),
                use_cache=True, logits_to_keep=1)
    _count(on_tokens, int(own_mask.sum()))
    return out, mask, positions, own_mask


def _score_batch(backend, shared_cache, n_shared, own_ids, labels, on_tokens) -> np.ndarray:
    model, device = backend.model, backend.device
    pad = backend.tokenizer.pad_token_id or 0
    out, mask, positions, own_mask = run_queries(backend, shared_cache, n_shared, own_ids,
                                                 on_tokens)
    B = len(own_ids)
    cache = out.cache  # shared + own, B rows
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
    L = len(labels)
    scores = torch.stack([first[:, ids[0]] for ids in labels], dim=1).double()  # (B, L)
    M = max(len(ids) for ids in labels)
    if M == 1:
        return scores.cpu().numpy()

    # Later label tokens: each (query, label) pair is a row continuing from the query's cache.
    # Labels go in chunks of similar token length, so a chunk pads only to its own longest label.
    own_lens = own_mask.sum(-1)  # (B,)
    rows = min(MAX_LABEL_ROWS, MAX_LABEL_ROW_TOKENS // (n_shared + own_mask.shape[1]))
    per_chunk = max(1, rows // B)
    longer = sorted((l for l in range(L) if len(labels[l]) > 1), key=lambda l: len(labels[l]))
    for c0 in range(0, len(longer), per_chunk):
        index = longer[c0:c0 + per_chunk]
        chunk = [labels[l] for l in index]
        C = len(chunk)
        M = max(len(ids) for ids in chunk)
        lab_in = torch.full((C, M - 1), pad, dtype=torch.long)
        lab_next = torch.zeros((C, M - 1), dtype=torch.long)
        lab_mask = torch.zeros((C, M - 1), dtype=torch.long)
        for c, ids in enumerate(chunk):
            n = len(ids) - 1
            if n:
                lab_in[c, :n] = torch.tensor(ids[:-1])
                lab_next[c, :n] = torch.tensor(ids[1:])
                lab_mask[c, :n] = 1
        rows_in = lab_in.repeat(B, 1)  # (B*C, M-1), row = b*C + c
        rows_mask = torch.cat([mask.repeat_interleave(C, dim=0), lab_mask.repeat(B, 1)], dim=1)
        rows_pos = (n_shared + own_lens).repeat_interleave(C)[:, None] + torch.arange(M - 1)[None]
        label_cache = _expand(cache, C)
        out = model(input_ids=rows_in.to(device), attention_mask=rows_mask.to(device),
                    position_ids=rows_pos.to(device), cache=label_cache, use_cache=True)
        _count(on_tokens, int(lab_mask.sum()) * B)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # (B*C, M-1, V)
        nxt = lab_next.repeat(B, 1).to(device)
        tok = logp.gather(-1, nxt[..., None])[..., 0] * lab_mask.repeat(B, 1).to(device)
        scores[:, index] += tok.sum(-1).view(B, C).double().cpu()
    return scores.cpu().numpy()


def _expand(cache, rows: int):
    """A copy of `cache` with each row repeated `rows` times (None stays None)."""
    if cache is None:
        return None
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    return cache


def _count(on_tokens, n: int) -> None:
    if on_tokens is not None:
        on_tokens(n)
