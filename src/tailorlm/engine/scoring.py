"""Classification by label log-likelihood, with every shared piece of the prompt computed once.

For a prompt x and label verbalizations y_1..y_L, the score of label l is

    log p(y_l | x) = sum_j log p(y_l[j] | x, y_l[<j])

We never generate and parse. The expensive part is x, so it runs through the model once per query
and every label continuation is scored from its key/value cache; the part of x that many queries
share (instruction, fixed demonstrations) runs once per group of queries:

    virtual prefix (1, V) + shared ids (1, S) ─► cache ─► expand to B rows ─► own ids (B, T),
        left-padded ─► cache', and logits at the last position: every label's 1st token
        ─► the label trie (N nodes: distinct label prefixes) as one sequence per row after
           cache', each node attending to the query and its own ancestors: later tokens

Shared ids begin with the tokenizer's BOS where it adds one by default (Gemma; engine/prompt.py
`encode_prompt`), so the model reads what `tokenizer(text)` gives. The virtual prefix is the key/values that a soft prompt or a prefix adapter puts before any text
(`Backend.virtual_prefix`, V positions; none for a plain model). Every group starts from a copy
of it and its shared ids continue at position V, so below n_shared = V + S counts both.

Only the first M-1 tokens of each label need a forward pass (the last one is only predicted), so
single-token label sets (sst2's " positive"/" negative") cost one forward per batch of queries.
Labels that begin alike share their trie nodes, and the query's cache is read by every label
without a copy per label (a copy per label made banking77's 77 labels after a 353-token
instruction cost 1.84 s a query). Positions are passed explicitly, so left padding inside a
batch does not shift them.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import torch

from tailorlm.engine.prompt import Prompt, encode_prompt
from tailorlm.models.backend import Backend

# Label-trie positions per forward, over all queries of a batch: the logits of each are a
# vocabulary-sized row (192 kB for SmolLM2 in float32).
MAX_TREE_POSITIONS = 2048


@torch.inference_mode()
def score_labels(backend: Backend, prompts: list[Prompt], continuations: list[str], *,
                 batch_size: int = 16, on_tokens=None, share_prefix: bool = True,
                 prefixes: PrefixCache | None = None) -> np.ndarray:
    """Sum of log-probabilities of each continuation after each prompt: shape (N, L), float64.

    `on_tokens(n)` is called with the number of tokens each forward pass processes (cost meter).
    `share_prefix=False` recomputes each prompt's shared part with its own (same token ids): the
    baseline the prefix cache is measured against. `prefixes` (a PrefixCache of this backend)
    keeps the shared parts' caches across calls; by default each call computes its own.
    """
    encode = backend.encode
    labels = [encode(c) for c in continuations]
    if any(len(ids) == 0 for ids in labels):
        raise ValueError("a label continuation encodes to no tokens")
    tree = LabelTree(labels)  # the same for every batch
    scores = np.zeros((len(prompts), len(labels)), dtype=np.float64)
    prefixes = prefixes if prefixes is not None else PrefixCache(backend)
    for shared_ids, idxs, own in grouped(backend, prompts, share_prefix):
        shared_cache, n_shared = prefixes.get(shared_ids, on_tokens)
        order = sorted(idxs, key=lambda i: len(own[i]))  # similar lengths together: less padding
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            scores[batch] = _score_batch(backend, shared_cache, n_shared,
                                         [own[i] for i in batch], labels, tree, on_tokens)
    return scores


def grouped(backend: Backend, prompts: list[Prompt], share_prefix: bool = True):
    """(shared ids, indices, {index: own ids}) per distinct shared part, BOS included
    (engine/prompt.py); without `share_prefix`, every prompt's ids are its own."""
    groups: dict[tuple, tuple[list[int], dict[int, list[int]]]] = {}
    for i, p in enumerate(prompts):
        shared, own = encode_prompt(backend, p)
        if not share_prefix:
            shared, own = [], shared + own
        if not own:
            raise ValueError("Prompt.own must not be empty: it ends right before the answer")
        idxs, owns = groups.setdefault(tuple(shared), ([], {}))
        idxs.append(i)
        owns[i] = own
    return [(list(shared), idxs, owns) for shared, (idxs, owns) in groups.items()]


class PrefixCache:
    """The key/values of each distinct shared part (virtual prefix + BOS + shared text) of one
    backend, computed once. A scoring or generation call makes its own; a caller that keeps one
    across calls (latency, one query at a time) reuses them, as a server with prefix caching does.
    The caches are never written to: every batch continues from a copy (`_expand`)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._virtual: tuple | None = None
        self._parts: dict[tuple, tuple] = {}

    def get(self, shared_ids: list[int], on_tokens=None) -> tuple[object, int]:
        key = tuple(shared_ids)
        if key not in self._parts:
            if self._virtual is None:
                vp = self.backend.virtual_prefix
                self._virtual = (vp(),) if vp is not None else (None,)
            self._parts[key] = shared_prefix(self.backend, self._virtual[0], shared_ids,
                                             on_tokens)
        return self._parts[key]


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


def _score_batch(backend, shared_cache, n_shared, own_ids, labels, tree, on_tokens) -> np.ndarray:
    model, device = backend.model, backend.device
    out, mask, positions, own_mask = run_queries(backend, shared_cache, n_shared, own_ids,
                                                 on_tokens)
    B = len(own_ids)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
    scores = torch.stack([first[:, ids[0]] for ids in labels], dim=1).double()  # (B, L)
    if not tree.tokens:  # every label is one token
        return scores.cpu().numpy()

    # Later label tokens: the label trie, one node per distinct label prefix, runs as one
    # sequence after each query's cache; a node attends to the query and its own ancestors
    # only (tree attention), so the query's cache is never copied per label and labels that
    # share words ("card arrival", "card linking") share their forward.
    cache, ctx = out.cache, mask.shape[1]
    start = (n_shared + own_mask.sum(-1))[:, None]  # (B, 1): each row's first label position
    chunks = tree.chunks(max(1, MAX_TREE_POSITIONS // B))
    dtype = next(model.parameters()).dtype
    for c, nodes in enumerate(chunks):
        sub, n = tree.ancestors[nodes][:, nodes], len(nodes)
        allowed = torch.cat([mask.bool()[:, None, :].expand(B, n, ctx),
                             sub[None].expand(B, n, n)], dim=2)  # (B, n, ctx + n)
        bias = torch.zeros(allowed.shape, dtype=dtype)
        bias.masked_fill_(~allowed, torch.finfo(dtype).min)
        ids = torch.tensor([tree.tokens[i] for i in nodes])[None].expand(B, n)
        pos = start + torch.tensor([tree.depth[i] for i in nodes])[None]
        # the forward appends to the cache it is given: the last chunk may use the original
        out = model(input_ids=ids.to(device), attention_mask=bias[:, None].to(device),
                    position_ids=pos.to(device), use_cache=True,
                    cache=cache if c == len(chunks) - 1 else copy.deepcopy(cache))
        _count(on_tokens, n * B)
        logits = out.logits.float()  # (B, n, V)
        label, at, tok = (t.to(device) for t in tree.targets_in(nodes))
        logp = logits[:, at, tok] - torch.logsumexp(logits, dim=-1)[:, at]  # (B, pairs)
        scores.index_add_(1, label, logp.double())
    return scores.cpu().numpy()


class LabelTree:
    """The label continuations' token trie, without the roots' predictions (a query's last
    logits give every label's first token) and without leaves (a label's last token is only
    predicted): node i stands for a label prefix ids[:j] (j >= 1), holds token ids[j-1] at
    depth j-1, and its logits predict ids[j]."""

    def __init__(self, labels: list[list[int]]):
        index: dict[tuple, int] = {}
        self.tokens, self.depth, parent, self.root = [], [], [], []
        self.targets: list[list[tuple[int, int]]] = []  # per label: (node, next token)
        for ids in labels:
            pairs = []
            for j in range(1, len(ids)):
                key = tuple(ids[:j])
                if key not in index:
                    index[key] = len(self.tokens)
                    up = index.get(key[:-1], -1)
                    self.tokens.append(ids[j - 1])
                    self.depth.append(j - 1)
                    parent.append(up)
                    self.root.append(index[key] if up < 0 else self.root[up])
                pairs.append((index[key], ids[j]))
            self.targets.append(pairs)
        n = len(self.tokens)
        self.ancestors = torch.eye(n, dtype=torch.bool)  # [i, a]: node i sees node a
        for i in range(n):  # parents come before their children
            if parent[i] >= 0:
                self.ancestors[i] |= self.ancestors[parent[i]]

    def chunks(self, size: int) -> list[list[int]]:
        """Nodes in groups of whole subtrees (a node's ancestors in its group), about `size`
        nodes each (a bigger subtree goes alone)."""
        trees: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(self.root):
            trees[r].append(i)
        groups: list[list[int]] = [[]]
        for nodes in trees.values():
            if groups[-1] and len(groups[-1]) + len(nodes) > size:
                groups.append([])
            groups[-1].extend(nodes)
        return [sorted(g) for g in groups]

    def targets_in(self, nodes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label, position in the chunk, next token) of every prediction the chunk's nodes
        make, as three aligned index tensors."""
        local = {node: j for j, node in enumerate(nodes)}
        found = [(label, local[node], tok) for label, pairs in enumerate(self.targets)
                 for node, tok in pairs if node in local]
        return tuple(torch.tensor(column) for column in zip(*found))


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
