"""Mixed batches: one base model in memory, rows of many adapters in one forward pass.

    engine = BatchEngine(base)                       # base: a LocalBackend; never copied
    support = engine.load(Path("adapters/router"), "router")  # -> Served
    engine.classify([ClassifyRequest(support, "my card never arrived"), ...])
    engine.generate([GenerateRequest(engine.base_served, prompt="Once upon", max_tokens=8), ...])

What an adapter adds is read once at load (methods/served.py), and one forward pass mixes them:

    text prompts (prompt_template, few_shot, instruction_search)   their rendering only
    soft prompts, prefixes      per-row key/values of their own length V_row (a soft prompt's run
                                through the model once at load, through the LoRA-adapted model for
                                a lora+soft_prompt hybrid; a prefix's are its parameters)
    LoRA                        a per-row slot in the banks of a view of the base (engine/
                                mixed_lora.py: y = W x + s_i B_i A_i x, BGMV-style)
    hybrids                     a LoRA slot and a per-row prefix, per variant
    full fine-tunes             their own model: batched among their own requests

Every row starts from its adapter's prefix: the virtual key/values, then BOS and the adapter's
shared text (instruction, fixed demonstrations), computed once per (adapter, shared text) and
kept (a few per adapter, least recently used out); the query's own ids follow at positions
P_row, P_row+1, ... (engine/mixed_batch.py), so each row computes what it would alone, and what
`tailor eval` computes: classification takes the adapter's adjusted scores' arg-max (contextual
calibration included) over log p(label words | prompt) summed over the label's tokens.

Generation rows leave the batch as they finish (their cache rows are dropped). A call is one
batch: requests that arrive while it runs join the next call (the server's next batch), not the
running decode loop. Both calls are synchronous; the caller runs one at a time (one thread).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import DynamicCache

from tailorlm.data.task import Example
from tailorlm.engine.generate import _eos_ids
from tailorlm.engine.mixed_batch import Row, label_logprobs, prefill
from tailorlm.engine.mixed_decode import RowDecoder, prompt_logprobs
from tailorlm.engine.mixed_lora import LoraBanks
from tailorlm.engine.prompt import Prompt, encode_prompt
from tailorlm.engine.scoring import MAX_TREE_POSITIONS, LabelTree
from tailorlm.models.backend import LocalBackend

PREFIXES_PER_SIDE = 8  # shared-text caches kept per adapter side (few-shot's demos: one each)


@dataclass
class ClassifyRequest:
    adapter: "Served"  # a classification adapter
    text: str  # the user's input (rendered by the adapter's template + demos)
    variant: str | None = None  # a hybrid's variant (its own input side); None: the fallback


@dataclass
class ClassifyResult:
    label: str  # argmax of the adapter's adjusted scores == `tailor eval`'s prediction
    logprobs: dict[str, float]  # log p(label verbalization | prompt) per label, raw
    prompt_tokens: int
    completion_tokens: int  # tokens of the chosen label's verbalization


@dataclass
class GenerateRequest:
    adapter: "Served"  # engine.base_served, or a generation adapter
    prompt: str | None = None  # raw text (the base; or an adapter without its template)
    text: str | None = None  # an adapter's input, rendered by its template
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # plus the adapter's own stop strings
    seed: int | None = None  # same seed, same request -> same text
    logprobs: int | None = None  # None: no top alternatives; k >= 0: top-k per token
    echo: bool = False  # also the prompt's tokens with their logprobs (first: None)
    on_token: Callable[[str], None] | None = None  # streaming: each new text piece
    cancelled: Callable[[], bool] | None = None  # client went away: stop this row
    variant: str | None = None  # a hybrid's variant; None: the fallback


@dataclass
class GenerateResult:
    text: str  # generated text only (not stripped; cut before a stop string)
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int  # virtual positions + the prompt's ids (BOS included)
    completion_tokens: int  # tokens picked, end-of-sequence included
    tokens: list[str] = field(default_factory=list)  # each picked token, decoded alone
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    prompt_token_strs: list[str] | None = None  # echo: the prompt's ids as the model read them
    prompt_token_logprobs: list[float | None] | None = None


@dataclass(eq=False)
class Side:
    """One input side of a served adapter (a hybrid has one per variant) and its caches."""

    parts: object  # methods.served.ServedParts
    virtual: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    n_virtual: int = 0
    prefixes: OrderedDict = field(default_factory=OrderedDict)  # shared ids -> (kv, P)
    labels_ids: list[list[int]] | None = None
    tree: LabelTree | None = None


@dataclass(eq=False)
class Served:
    name: str
    method: str
    kind: str  # "classification" | "generation"
    labels: list[str] | None
    card: dict
    sides: dict[str | None, Side] = field(default_factory=dict, repr=False)
    slot: int = 0  # LoRA bank slot; 0: none
    model: torch.nn.Module | None = field(default=None, repr=False)  # own model (full); None
    weight_bytes: int = 0  # LoRA factors or a whole model

    @property
    def nbytes(self) -> int:
        """Resident bytes this adapter adds: its weights, virtual key/values and prefix caches."""
        total = self.weight_bytes
        for side in self.sides.values():
            total += _kv_bytes(side.virtual)
            total += sum(_kv_bytes(kv) for kv, _ in side.prefixes.values())
        return total

    def side(self, variant: str | None) -> Side:
        return self.sides.get(variant, self.sides[None])


class BatchEngine:
    def __init__(self, base: LocalBackend, *, max_batch: int = 32):
        from tailorlm.methods.served import base_parts

        self.base, self.max_batch = base, max_batch
        self.banks = LoraBanks(base.model)
        self.pad_id = base.tokenizer.pad_token_id or 0
        self.base_served = Served(base.name, "base", "generation", None, {},
                                  {None: Side(base_parts())})

    # -- adapters ----------------------------------------------------------------------------
    def load(self, adapter_dir: Path, name: str) -> Served:
        """Read an adapter folder and keep what a forward pass needs (methods/served.py)."""
        from tailorlm.methods.artifact import load_adapter, load_card

        return self.add(load_adapter(adapter_dir), name, load_card(adapter_dir))

    @torch.no_grad()
    def add(self, adapter, name: str, card: dict | None = None) -> Served:
        """Serve an adapter object already in memory (a fit's result; `load` reads a folder)."""
        from tailorlm.methods.served import served_parts

        parts = served_parts(adapter, self.base)
        served = Served(name, adapter.method, parts.kind, parts.labels, dict(card or {}),
                        model=parts.model)
        if parts.lora:
            served.slot = self.banks.add(parts.lora)
            served.weight_bytes = sum(A.nbytes + B.nbytes for A, B, _ in parts.lora.values())
        if parts.model is not None:
            served.weight_bytes = sum(t.nbytes for t in (*parts.model.parameters(),
                                                         *parts.model.buffers()))
        for variant, side_parts in [(None, parts), *parts.variants.items()]:
            side = Side(side_parts)
            if side_parts.virtual is not None:
                self._use(served)
                cache, side.n_virtual = side_parts.virtual(self._model(served))
                side.virtual = [(k.detach().clone(), v.detach().clone()) for k, v in
                                _layers_kv(cache)]
            if side_parts.kind == "classification":
                side.labels_ids = [self.base.encode(c) for c in side_parts.continuations]
                if any(not ids for ids in side.labels_ids):
                    raise ValueError("a label continuation encodes to no tokens")
                side.tree = LabelTree(side.labels_ids)
            served.sides[variant] = side
        return served

    def unload(self, served: Served) -> None:
        """Free its LoRA slot, its key/values and its own model."""
        self.banks.remove(served.slot)
        served.slot, served.model, served.sides = 0, None, {}

    # -- classification ----------------------------------------------------------------------
    @torch.inference_mode()
    def classify(self, reqs: list[ClassifyRequest]) -> list[ClassifyResult]:
        rows, meta = [], []
        for req in reqs:
            served = req.adapter
            if served.kind != "classification":
                raise ValueError(f"{served.name} is a {served.kind} adapter: generate with it")
            side = served.side(req.variant)
            shared, own = self._encode(side.parts.prompt(Example(input=req.text, target="")))
            rows.append(self._row(served, side, shared, own))
            meta.append((served, side))
        results: list[ClassifyResult | None] = [None] * len(reqs)
        for model, idx in self._groups(reqs, rows):
            batch, nodes = [], 0  # nodes: the largest label trie in the batch
            for i in idx:
                n_i = len(meta[i][1].tree.tokens)
                if batch and (len(batch) >= self.max_batch
                              or (len(batch) + 1) * max(nodes, n_i) > MAX_TREE_POSITIONS):
                    self._classify_batch(model, rows, meta, batch, results)
                    batch, nodes = [], 0
                batch.append(i)
                nodes = max(nodes, n_i)
            if batch:
                self._classify_batch(model, rows, meta, batch, results)
        return results

    def _classify_batch(self, model, all_rows, all_meta, idx, results) -> None:
        rows, meta = [all_rows[i] for i in idx], [all_meta[i] for i in idx]
        scores = label_logprobs(model, rows, [side.labels_ids for _, side in meta],
                                [side.tree for _, side in meta], self.pad_id,
                                self._banks_for(model))
        for i, row, (served, side), raw in zip(idx, rows, meta, scores):
            adjusted = side.parts.adjust(raw[None])[0]
            best = int(adjusted.argmax())
            results[i] = ClassifyResult(
                label=served.labels[best],
                logprobs={label: float(x) for label, x in zip(served.labels, raw)},
                prompt_tokens=row.n_prefix + len(row.own),
                completion_tokens=len(side.labels_ids[best]))

    # -- generation --------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, reqs: list[GenerateRequest]) -> list[GenerateResult]:
        rows, decoders, prompts = [], [], []
        for req in reqs:
            side = req.adapter.side(req.variant)
            if req.text is not None:
                prompt = side.parts.prompt(Example(input=req.text, target=""))
            else:
                prompt = Prompt("", req.prompt or "")
            shared, own = self._encode(prompt)
            if req.echo:  # every prompt token's log-probability: no shared cache for the text
                shared, own = [], shared + own
            rows.append(self._row(req.adapter, side, shared, own))
            prompts.append(shared + own)
            decoders.append(RowDecoder(req, self.base.tokenizer, set(),
                                       tuple(req.stop) + side.parts.stop))
        results: list[GenerateResult | None] = [None] * len(reqs)
        for model, idx in self._groups(reqs, rows):
            eos = _eos_ids(self.base.with_model(model))
            for echo in (False, True):
                todo = [i for i in idx if reqs[i].echo == echo
                        and (echo or reqs[i].max_tokens > 0)]
                for start in range(0, len(todo), self.max_batch):
                    batch = todo[start:start + self.max_batch]
                    for i in batch:
                        decoders[i].eos = eos
                    self._decode(model, [rows[i] for i in batch], [decoders[i] for i in batch],
                                 [prompts[i] for i in batch], echo)
        for i, (req, row, d) in enumerate(zip(reqs, rows, decoders)):
            if d.finish is None:
                d.finish = "length"  # max_tokens 0
            results[i] = GenerateResult(
                text=d.text, finish_reason=d.finish,
                prompt_tokens=row.n_prefix + len(row.own), completion_tokens=d.n,
                tokens=d.tokens, token_logprobs=d.token_logprobs, top_logprobs=d.top,
                prompt_token_strs=[self.base.tokenizer.decode([t]) for t in prompts[i]]
                if req.echo else None,
                prompt_token_logprobs=getattr(d, "prompt_logprobs", None) if req.echo else None)
        return results

    def _decode(self, model, rows: list[Row], decoders: list[RowDecoder], prompts, echo) -> None:
        banks = self._banks_for(model)
        out, mask, positions = prefill(model, rows, self.pad_id, banks, all_logits=echo)
        if echo:
            T = out.logits.shape[1]
            for b, (row, d) in enumerate(zip(rows, decoders)):
                d.prompt_logprobs = prompt_logprobs(out.logits[b, T - len(row.own):], row.own)
        logits, cache = out.logits[:, -1], out.cache
        next_pos = positions[:, -1:] + 1
        slots = torch.tensor([r.slot for r in rows])
        alive = list(range(len(rows)))
        while True:
            for j, b in enumerate(alive):
                d = decoders[b]
                if d.req.max_tokens <= 0:
                    d.end("length")
                elif not d.poll_cancelled():
                    d.step(logits[j])
            keep = [j for j, b in enumerate(alive) if not decoders[b].done]
            if not keep:
                return
            if len(keep) < len(alive):  # finished rows leave the batch and the cache
                sel = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(sel)
                mask, next_pos = mask[sel], next_pos[sel]
                alive = [alive[j] for j in keep]
            ids = torch.tensor([decoders[b].picked[-1] for b in alive], device=mask.device)
            if banks is not None:
                banks.use(slots[alive])
            mask = torch.cat([mask, torch.ones_like(next_pos)], dim=1)
            out = model(input_ids=ids[:, None], attention_mask=mask, position_ids=next_pos,
                        cache=cache, use_cache=True, logits_to_keep=1)
            logits, cache, next_pos = out.logits[:, -1], out.cache, next_pos + 1

    # -- shared pieces -----------------------------------------------------------------------
    def _encode(self, prompt: Prompt) -> tuple[list[int], list[int]]:
        shared, own = encode_prompt(self.base, prompt)
        if not own:  # nothing of its own (an empty query after BOS): the last id is the query
            shared, own = shared[:-1], shared[-1:]
        if not own:
            raise ValueError("the prompt is empty: give some text")
        return shared, own

    def _row(self, served: Served, side: Side, shared: list[int], own: list[int]) -> Row:
        kv, n = self._prefix(served, side, shared)
        return Row(kv, n, own, served.slot)

    def _prefix(self, served: Served, side: Side, shared: list[int]):
        """(key/values, P) every query of `side` with these shared ids starts from, cached."""
        if not shared:
            return side.virtual, side.n_virtual
        key = tuple(shared)
        if key in side.prefixes:
            side.prefixes.move_to_end(key)
            return side.prefixes[key]
        model, n = self._model(served), side.n_virtual
        device = next(model.parameters()).device
        self._use(served)
        cache = DynamicCache(side.virtual, config=model.config) if side.virtual else None
        P = n + len(shared)
        out = model(input_ids=torch.tensor([shared], device=device),
                    attention_mask=torch.ones((1, P), dtype=torch.long, device=device),
                    position_ids=torch.arange(n, P, device=device)[None], cache=cache,
                    use_cache=True, logits_to_keep=1)
        side.prefixes[key] = (list(_layers_kv(out.cache)), P)
        while len(side.prefixes) > PREFIXES_PER_SIDE:
            side.prefixes.popitem(last=False)
        return side.prefixes[key]

    def _groups(self, reqs, rows: list[Row]):
        """(model, request indices) per model: the base's view (every adapter that is not a
        full fine-tune), then each full fine-tune's own; indices sorted by LoRA slot (each
        adapter's rows one run: mixed_lora.py), then by own length (less padding)."""
        groups: dict[int, tuple[torch.nn.Module, list[int]]] = {}
        for i, req in enumerate(reqs):
            model = self._model(req.adapter)
            groups.setdefault(id(model), (model, []))[1].append(i)
        return [(model, sorted(idx, key=lambda i: (rows[i].slot, len(rows[i].own))))
                for model, idx in groups.values()]

    def _model(self, served: Served) -> torch.nn.Module:
        return served.model if served.model is not None else self.banks.view

    def _banks_for(self, model):
        return self.banks if model is self.banks.view else None

    def _use(self, served: Served) -> None:
        self.banks.use([served.slot])


def _layers_kv(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def _kv_bytes(kv) -> int:
    return sum(k.nbytes + v.nbytes for k, v in kv) if kv else 0
