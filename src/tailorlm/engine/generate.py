"""Greedy text generation in batches, with every shared piece of the prompt computed once.

Greedy decoding picks the most likely next token, appends it and repeats:

    y_t = argmax_v p(v | x, y_<t)

until the model emits end-of-sequence, the text so far contains a stop string (cut before it), or
`max_new_tokens` tokens were picked. It is deterministic, so a generation task's score depends on
the model and the prompt only. The loop is ours rather than `model.generate` so that it can start
from the cache of a shared prefix, exactly as scoring does:

    [virtual prefix (1, V)] + shared ids (1, S) ─► cache ─► expand to B rows
        ─► own ids (B, T), left-padded ─► y_1 (B,) ─► cache' + y_1 (B', 1) ─► y_2 (B',) ...

Shared ids begin with BOS where the tokenizer adds one by default (engine/prompt.py). The virtual
prefix (a soft prompt's or a prefix adapter's key/values; none for a plain model)
comes first, as in scoring (`scoring.shared_prefix`). Each decode step feeds one token per row
still running (B' ≤ B: rows that stopped leave the batch and their cache) at position previous + 1,
with a 1 appended to the attention mask. Positions are passed explicitly, so left padding inside a
batch does not shift them.
"""

from __future__ import annotations

import torch

from tailorlm.engine.prompt import Prompt
from tailorlm.engine.scoring import PrefixCache, _count, grouped, run_queries
from tailorlm.models.backend import Backend


@torch.inference_mode()
def generate(backend: Backend, prompts: list[Prompt], *, max_new_tokens: int = 64,
             stop: tuple[str, ...] = ("\n",), batch_size: int = 16, on_tokens=None,
             on_generated=None, prefixes: PrefixCache | None = None) -> list[str]:
    """The greedy continuation of each prompt, cut before the first stop string and stripped.

    `on_tokens(n)` is called with the number of tokens each forward pass processes (cost meter);
    `on_generated(n)` with the number of tokens each batch picked (end-of-sequence included: an
    API bills it too). `prefixes` keeps the shared parts' caches across calls (engine/scoring.py).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    texts = [""] * len(prompts)
    prefixes = prefixes if prefixes is not None else PrefixCache(backend)
    for shared_ids, idxs, own in grouped(backend, prompts):
        shared_cache, n_shared = prefixes.get(shared_ids, on_tokens)
        order = sorted(idxs, key=lambda i: len(own[i]))  # similar lengths together: less padding
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            outs, picked = _generate_batch(backend, shared_cache, n_shared,
                                           [own[i] for i in batch], max_new_tokens, stop,
                                           on_tokens)
            if on_generated is not None:
                on_generated(picked)
            for i, text in zip(batch, outs):
                texts[i] = text.strip()
    return texts


def _generate_batch(backend, shared_cache, n_shared, own_ids, max_new_tokens, stop,
                    on_tokens) -> tuple[list[str], int]:
    """The batch's texts, and how many tokens it picked in all."""
    model, device, tok = backend.model, backend.device, backend.tokenizer
    eos = _eos_ids(backend)
    B = len(own_ids)
    out, mask, positions, _ = run_queries(backend, shared_cache, n_shared, own_ids, on_tokens)
    cache = out.cache

    mask = mask.to(device)
    next_pos = positions[:, -1:].to(device) + 1  # (B, 1): where each row's next token goes
    rows = list(range(B))  # batch row -> index into own_ids, for the rows still running
    picked: list[list[int]] = [[] for _ in range(B)]
    texts = [""] * B
    n_picked = 0
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(-1)  # (B',)
        keep = []
        n_picked += len(rows)
        for r, (row, t) in enumerate(zip(rows, next_ids.tolist())):
            if t in eos:
                continue
            picked[row].append(t)
            text = tok.decode(picked[row], skip_special_tokens=True)
            cut = min((k for k in (text.find(s) for s in stop) if k >= 0), default=-1)
            texts[row] = text if cut < 0 else text[:cut]
            if cut < 0:
                keep.append(r)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):  # finished rows leave the batch, and their cache with them
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            rows = [rows[r] for r in keep]
            next_ids, mask, next_pos = next_ids[sel], mask[sel], next_pos[sel]
        mask = torch.cat([mask, torch.ones_like(next_pos)], dim=1)  # (B', S+T+step+1)
        out = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=next_pos,
                    cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        next_pos = next_pos + 1
        _count(on_tokens, len(rows))
    return texts, n_picked


def _eos_ids(backend) -> set[int]:
    """End-of-sequence ids: the tokenizer's, and the model's generation config's (an int or list)."""
    ids = {backend.tokenizer.eos_token_id}
    config_eos = getattr(getattr(backend.model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos is not None:
        ids.update(config_eos)
    ids.discard(None)
    return ids
