"""One forward pass over rows that each start from their own key/values (engine/mixed.py).

A row is (prefix, own ids, LoRA slot): its prefix is the key/values every one of its adapter's
queries starts from, V_row virtual positions (a soft prompt's or prefix's) then BOS and the
adapter's shared text, P_row positions in all, computed once per adapter and shared text and kept.
Rows of different adapters have prefixes of different lengths, so the batch is ragged:

    past (B, P_max):   [0 ... 0 | prefix of row b (P_b)]        left-padded, attention mask 0
    input (B, T_max):  [pad ... | own ids of row b (T_b)]        left-padded, attention mask 0
    positions of row b's own ids: P_b, P_b + 1, ..., P_b + T_b - 1

Positions are explicit, so padding never shifts a row: each row reads exactly what it would read
alone (engine/scoring.py does the same with one shared prefix for every row). The prefix's keys
were rotated at their own positions when computed, so they are copied, not recomputed.

Classification scores each row's labels: their first tokens from the last position's logits, the
later tokens of multi-token labels (banking77) through the row's own label trie run after its
cache with tree attention (scoring.LabelTree), every row's trie padded to the batch's largest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from tailorlm.engine.scoring import LabelTree


@dataclass
class Row:
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer (1, kv_heads, P, head_dim)
    n_prefix: int
    own: list[int]
    slot: int = 0  # LoRA bank slot (0: none)


def prefill(model, rows: list[Row], pad_id: int, banks=None, all_logits: bool = False):
    """Run every row's own ids after its prefix. Returns (output, attention mask (B, P+T),
    positions (B, T)); logits at the last position only unless `all_logits`."""
    if banks is not None:
        banks.use([r.slot for r in rows])
    device = next(model.parameters()).device
    B, P, T = len(rows), max(r.n_prefix for r in rows), max(len(r.own) for r in rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    own_mask = torch.zeros((B, T), dtype=torch.long)
    past_mask = torch.zeros((B, P), dtype=torch.long)
    starts = torch.tensor([r.n_prefix for r in rows])
    for b, r in enumerate(rows):
        input_ids[b, T - len(r.own):] = torch.tensor(r.own)
        own_mask[b, T - len(r.own):] = 1
        past_mask[b, P - r.n_prefix:] = 1
    positions = (starts[:, None] + own_mask.cumsum(-1) - 1).clamp(min=0)
    positions = torch.maximum(positions, starts[:, None])  # pads: any position; keep them sane
    mask = torch.cat([past_mask, own_mask], dim=1)
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), cache=ragged_cache(model, rows, P),
                use_cache=True, logits_to_keep=0 if all_logits else 1)
    return out, mask.to(device), positions.to(device)


def ragged_cache(model, rows: list[Row], P: int):
    """A DynamicCache holding each row's prefix, left-padded to P positions (None if P == 0)."""
    if P == 0:
        return None
    sample = next(r.prefix for r in rows if r.prefix is not None)
    layers = []
    for layer, (k0, v0) in enumerate(sample):
        K = k0.new_zeros((len(rows), k0.shape[1], P, k0.shape[3]))
        V = v0.new_zeros((len(rows), v0.shape[1], P, v0.shape[3]))
        for b, r in enumerate(rows):
            if r.n_prefix:
                k, v = r.prefix[layer]
                K[b, :, P - r.n_prefix:] = k[0]
                V[b, :, P - r.n_prefix:] = v[0]
        layers.append((K, V))
    return DynamicCache(layers, config=model.config)


def label_logprobs(model, rows: list[Row], labels: list[list[list[int]]],
                   trees: list[LabelTree], pad_id: int, banks=None) -> list[np.ndarray]:
    """log p(label | row's prompt) for every label of every row: one (L_b,) float64 per row."""
    out, mask, positions = prefill(model, rows, pad_id, banks)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, vocab)
    scores = [first[b, [ids[0] for ids in labels[b]]].double() for b in range(len(rows))]
    N = max(len(t.tokens) for t in trees)
    if N == 0:
        return [s.cpu().numpy() for s in scores]
    B, ctx, device = len(rows), mask.shape[1], mask.device
    ids = torch.full((B, N), pad_id, dtype=torch.long)
    start = positions[:, -1].cpu() + 1  # (B,): each row's first label position
    pos = start[:, None].repeat(1, N)
    allowed = torch.zeros((B, N, ctx + N), dtype=torch.bool)
    allowed[:, :, :ctx] = mask.bool().cpu()[:, None, :]
    allowed[:, torch.arange(N), ctx + torch.arange(N)] = True  # padding nodes see themselves
    for b, t in enumerate(trees):
        n = len(t.tokens)
        if n:
            ids[b, :n] = torch.tensor(t.tokens)
            pos[b, :n] += torch.tensor(t.depth)
            allowed[b, :n, ctx:ctx + n] = t.ancestors
    dtype = next(model.parameters()).dtype
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    out = model(input_ids=ids.to(device), attention_mask=bias[:, None].to(device),
                position_ids=pos.to(device), cache=out.cache, use_cache=True)
    logits = out.logits.float()  # (B, N, vocab)
    for b, t in enumerate(trees):
        if not t.tokens:
            continue
        label, at, tok = (x.to(device) for x in all_targets(t))
        logp = logits[b, at, tok] - torch.logsumexp(logits[b, at], dim=-1)
        scores[b] = scores[b].index_add(0, label, logp.double())
    return [s.cpu().numpy() for s in scores]


def all_targets(tree: LabelTree):
    """(label, node, next token) of every prediction the trie makes, computed once per tree."""
    found = getattr(tree, "_all", None)
    if found is None:
        found = tree._all = tree.targets_in(list(range(len(tree.tokens))))
    return found
