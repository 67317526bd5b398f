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

That is the layout generation starts from (its rows then decode one token each). Classification
packs its rows instead (label_logprobs, below): no padding, each adapter's prefix once; it scores
each row's labels, their first tokens from the row's last logits, the later tokens of multi-token
labels (banking77) through the row's own label trie run after the packed rows with tree attention
(scoring.LabelTree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward

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


def all_targets(tree: LabelTree):
    """(label, node, next token) of every prediction the trie makes, computed once per tree."""
    found = getattr(tree, "_all", None)
    if found is None:
        found = tree._all = tree.targets_in(list(range(len(tree.tokens))))
    return found


# -- packed: every row's tokens in one sequence, no padding -------------------------------------
#
# Padding a classification batch to its longest row computes every pad (sst2 queries run from 5
# to 60 tokens: half a padded batch can be pads), and cutting batches short to avoid it runs the
# model on a few rows at a time. Packed, a batch is one sequence of exactly its rows' tokens:
#
#   cache (1, Σ distinct prefixes):  [prefix A | prefix B | ...]   each adapter's prefix once
#   input (1, Σ T_b):                [row 1's own ids | row 2's | ...]   positions P_b, P_b+1, ...
#
# and one additive mask says what each token reads: its row's prefix and the row's earlier own
# tokens (block-diagonal causal). Rows of one adapter share one copy of its prefix, so a few-shot
# adapter's long prefix is read by its rows, never padded into the others'. The linear layers,
# most of the work, see only real tokens; the attention is over the packed keys, masked.


def label_logprobs(model, rows: list[Row], labels: list[list[list[int]]],
                   trees: list[LabelTree], banks=None) -> list[np.ndarray]:
    """log p(label | row's prompt) for every label of every row: one (L_b,) float64 per row,
    the rows packed into one sequence (rows of one LoRA slot best adjacent)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    spans, layers, P = {}, [], 0  # id(prefix) -> (start, length) in the packed cache
    for r in rows:
        if r.n_prefix and id(r.prefix) not in spans:
            spans[id(r.prefix)] = (P, r.n_prefix)
            layers.append(r.prefix)
            P += r.n_prefix
    lengths = [len(r.own) for r in rows]
    T = sum(lengths)
    ends = np.cumsum(lengths)  # each row's own ids end here (exclusive) in the packed input
    ids = torch.tensor([t for r in rows for t in r.own], dtype=torch.long)[None]
    positions = torch.tensor([r.n_prefix + j for r in rows for j in range(len(r.own))])[None]
    reads = []  # per row: the packed keys its tokens read (its prefix, then its own ids)
    allowed = torch.zeros((T, P + T), dtype=torch.bool)
    segments = []
    for b, r in enumerate(rows):
        lo, hi = int(ends[b]) - lengths[b], int(ends[b])
        s, n = spans[id(r.prefix)] if r.n_prefix else (0, 0)
        reads.append(torch.cat([torch.arange(s, s + n), torch.arange(P + lo, P + hi)]))
        causal = torch.ones((hi - lo, hi - lo), dtype=torch.bool).tril()
        allowed[lo:hi, s:s + n] = True
        allowed[lo:hi, P + lo:P + hi] = causal
        segments.append((lo, hi, reads[b].to(device),
                         torch.cat([torch.ones((hi - lo, n), dtype=torch.bool), causal],
                                   dim=1).to(device)))
    cache = None
    if P:
        cache = DynamicCache([(torch.cat([kv[layer][0] for kv in layers], dim=2),
                               torch.cat([kv[layer][1] for kv in layers], dim=2))
                              for layer in range(len(layers[0]))], config=model.config)
    if banks is not None:
        banks.use_tokens([(r.slot, int(ends[b]) - lengths[b], int(ends[b]))
                          for b, r in enumerate(rows)])
    last = torch.tensor(ends - 1, dtype=torch.long)
    out = model(input_ids=ids.to(device), attention_mask=_bias(allowed, dtype).to(device),
                position_ids=positions.to(device), cache=cache, use_cache=True,
                logits_to_keep=last.to(device), packed_segments=segments)
    first = torch.log_softmax(out.logits[0].float(), dim=-1)  # (B, vocab)
    scores = [first[b, [ids[0] for ids in labels[b]]].double() for b in range(len(rows))]
    sizes = [len(t.tokens) for t in trees]
    N = sum(sizes)
    if N == 0:
        return [s.cpu().numpy() for s in scores]
    # Every row's label trie after its tokens, packed the same way: node i of row b reads the
    # row's prefix and own tokens and its own ancestors (tree attention, scoring.LabelTree).
    node_ids = torch.tensor([tok for t in trees for tok in t.tokens], dtype=torch.long)[None]
    node_pos = torch.tensor([rows[b].n_prefix + lengths[b] + d
                             for b, t in enumerate(trees) for d in t.depth])[None]
    dense = torch.zeros((N, P + T + N), dtype=torch.bool)
    starts = np.cumsum([0] + sizes)
    segments = []
    for b, t in enumerate(trees):
        lo, hi = int(starts[b]), int(starts[b + 1])
        if lo == hi:
            continue
        dense[lo:hi, :P + T] = allowed[int(ends[b]) - 1]  # what the row's last token reads
        dense[lo:hi, P + int(ends[b]) - 1] = True  # ... and that token itself
        dense[lo:hi, P + T + lo:P + T + hi] = t.ancestors
        keys = torch.cat([reads[b], torch.arange(P + T + lo, P + T + hi)])
        segments.append((lo, hi, keys.to(device), torch.cat(
            [torch.ones((hi - lo, len(reads[b])), dtype=torch.bool), t.ancestors],
            dim=1).to(device)))
    if banks is not None:
        banks.use_tokens([(r.slot, int(starts[b]), int(starts[b + 1]))
                          for b, r in enumerate(rows)])
    out = model(input_ids=node_ids.to(device), attention_mask=_bias(dense, dtype).to(device),
                position_ids=node_pos.to(device), cache=out.cache, use_cache=True,
                packed_segments=segments)
    logits = out.logits[0].float()  # (N, vocab)
    for b, t in enumerate(trees):
        if not t.tokens:
            continue
        label, at, tok = (x.to(device) for x in all_targets(t))
        at = at + int(starts[b])
        logp = logits[at, tok] - torch.logsumexp(logits[at], dim=-1)
        scores[b] = scores[b].index_add(0, label, logp.double())
    return [s.cpu().numpy() for s in scores]


# A packed sequence's attention, row by row. The dense mask above is what any attention
# implementation reads (correct, but every query meets every packed key: at 200k pairs a pack
# spends most of its attention on masked pairs). A model whose attention is PACKED_ATTENTION (the
# engine sets it on the models it serves) reads `packed_segments` instead: each row's queries
# against only the keys that row reads, so the attention costs what the rows would alone.
PACKED_ATTENTION = "tailorlm_packed"


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, packed_segments=None, **kwargs):
    """(1, heads, Q, d) queries against (1, kv_heads, K, d) keys: per segment (first query, end
    query, the key indices it reads, its (q, k) bool mask), or the plain SDPA path without
    segments (generation, a model outside the engine)."""
    if packed_segments is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    out = query.new_empty((1, query.shape[2], query.shape[1], query.shape[3]))
    for lo, hi, keys, mask in packed_segments:
        o = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, lo:hi], key[:, :, keys], value[:, :, keys], attn_mask=mask[None, None],
            scale=scaling, enable_gqa=gqa)
        out[:, lo:hi] = o.transpose(1, 2)
    return out, None


def use_packed_attention(model) -> None:
    """Make `model` (a served copy: the banks' view, a full fine-tune) read packed_segments."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if PACKED_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PACKED_ATTENTION, packed_attention)
        # its masks are SDPA's (the fallback path reads them): unregistered, transformers
        # would build none and attend causally over padding
        AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    model.config._attn_implementation = PACKED_ATTENTION


def _bias(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """(1, 1, q, k) additive mask: 0 where allowed, the dtype's minimum elsewhere."""
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[None, None]
