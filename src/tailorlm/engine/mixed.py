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
                                mixed_lora.py: y = W x + s_i B_i A_i x per row)
    hybrids                     a LoRA slot and a per-row prefix, per variant
    full fine-tunes             their own model: batched among their own requests

Every row starts from its adapter's prefix: the virtual key/values, then BOS and the adapter's
shared text (instruction, fixed demonstrations), computed once per (adapter, shared text) and
kept (a few per adapter, least recently used out); the query's own ids follow at positions
P_row, P_row+1, ... (engine/mixed_batch.py), so each row computes what it would alone, and what
`tailor eval` computes: classification takes the adapter's adjusted scores' arg-max (contextual
calibration included) over log p(label words | prompt) summed over the label's tokens.

Generation rows leave the batch as they finish (their cache rows are dropped), and new rows join
at any decoding step (engine/mixed_generate.py: continuous batching): the rest of a call's rows
beyond `max_batch`, and what `generate(..., admit=...)` hands over while it runs (a server's
queue). Both calls are synchronous; the caller runs one at a time (one thread).
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
from tailorlm.engine.mixed_batch import Row, label_logprobs, use_packed_attention
from tailorlm.engine.mixed_decode import RowDecoder
from tailorlm.engine.mixed_generate import DecodeLoop, Job, mergeable
from tailorlm.engine.mixed_lora import LoraBanks
from tailorlm.engine.prompt import Prompt, encode_prompt
from tailorlm.engine.scoring import MAX_TREE_POSITIONS, LabelTree
from tailorlm.models.backend import LocalBackend

PREFIXES_PER_SIDE = 8  # shared-text caches kept per adapter side (few-shot's demos: one each)
# A classification pack is cut where its dense mask would pass PACK_PAIRS query-key pairs (every
# packed token against every packed key). The engine's models attend row by row
# (mixed_batch.packed_attention: a row meets only its own keys) and read the mask only on the
# fallback path, so the cap bounds the mask's memory (4 bytes a pair) more than the work.
# Measured on eight mixed adapters (bench/serve.py, 32 rows): row-by-row attention 32 req/s at
# 200k, 400k or no cap; through the dense mask 28 at 200k, 26 with no cap.
PACK_PAIRS = 1_000_000
PREFIX_BUCKET = 64


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
    on_done: Callable[["GenerateResult"], None] | None = None  # its result, once finished


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
        if not self.sides:
            raise ValueError(f"{self.name} was unloaded; load it again to use it")
        return self.sides.get(variant, self.sides[None])


class BatchEngine:
    def __init__(self, base: LocalBackend, *, max_batch: int = 32):
        from tailorlm.methods.served import base_parts

        self.base, self.max_batch = base, max_batch
        self.banks = LoraBanks(base.model)
        use_packed_attention(self.banks.view)  # its own config: the base's is left as it is
        self.pad_id = base.tokenizer.pad_token_id or 0
        self._eos_cache: dict[int, set[int]] = {}
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
            if parts.model.config is not self.base.model.config:
                use_packed_attention(parts.model)
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
        for model, idx in self._groups(reqs):
            for batch in self._batches(idx, rows, [len(side.tree.tokens) for _, side in meta]):
                self._classify_batch(model, rows, meta, batch, results)
        return results

    def _batches(self, idx: list[int], rows: list[Row], nodes: list[int]):
        """Packs of at most max_batch rows, cut where one more row would take the pack's
        attention past PACK_PAIRS or its label tries past MAX_TREE_POSITIONS nodes. Rows go in
        order of prefix length (in buckets of PREFIX_BUCKET positions) then of prefix, so the
        rows reading one prefix share a pack (a pack holds each prefix once) and each LoRA
        adapter's rows are one run (mixed_lora.py)."""
        def order(j):
            return rows[j].n_prefix // PREFIX_BUCKET, id(rows[j].prefix), rows[j].slot

        pack: list[int] = []
        for i in sorted(idx, key=order):
            grown = pack + [i]
            T = sum(len(rows[j].own) for j in grown)
            P = sum({id(rows[j].prefix): rows[j].n_prefix for j in grown}.values())
            if pack and (len(pack) >= self.max_batch or T * (P + T) > PACK_PAIRS
                         or sum(nodes[j] for j in grown) > MAX_TREE_POSITIONS):
                yield pack
                grown = [i]
            pack = grown
        if pack:
            yield pack

    def _classify_batch(self, model, all_rows, all_meta, idx, results) -> None:
        rows, meta = [all_rows[i] for i in idx], [all_meta[i] for i in idx]
        scores = label_logprobs(model, rows, [side.labels_ids for _, side in meta],
                                [side.tree for _, side in meta], self._banks_for(model))
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
    def generate(self, reqs: list[GenerateRequest], *,
                 admit: Callable[[int], list[GenerateRequest]] | None = None
                 ) -> list[GenerateResult]:
        """Decode every request; results in order (then those `admit` handed over).

        `admit(room)`, if given, is asked before every decoding step for up to `room` more
        requests, which join the running batch at that step (continuous batching); requests for
        another model (a full fine-tune) run after it, in this call. A request's `on_done`
        gets its result as soon as it finishes, before the call returns.
        """
        jobs = [self._job(req) for req in reqs]
        everything, queue = list(jobs), []
        for job in jobs:
            if job.req.max_tokens <= 0 and not job.req.echo:
                self._finish(job)  # nothing to compute
            else:
                queue.append(job)

        def take(n: int, model) -> list[Job]:
            """Up to n waiting jobs for `model`: this call's own first, then admitted ones."""
            mine = [job for job in queue if job.model is model][:n]
            for job in mine:
                queue.remove(job)
            if admit is not None and len(mine) < n:
                for req in admit(n - len(mine)):
                    job = self._job(req)
                    everything.append(job)
                    if job.req.max_tokens <= 0 and not job.req.echo:
                        self._finish(job)
                    elif job.model is model:
                        mine.append(job)
                    else:
                        queue.append(job)
            return mine

        while queue:
            model = queue[0].model
            queue.sort(key=lambda job: (job.row.slot, len(job.row.own)))
            loop = DecodeLoop(model, self._banks_for(model), self.pad_id, self.max_batch,
                              self._finish)
            if mergeable(model):
                loop.run(take(self.max_batch, model), lambda n: take(n, model))
            else:  # one batch at a time, echo rows apart: its caches cannot be merged
                first = take(self.max_batch, model)
                for echo in (False, True):
                    part = [job for job in first if bool(job.req.echo) == echo]
                    if part:
                        DecodeLoop(model, self._banks_for(model), self.pad_id, self.max_batch,
                                   self._finish).run(part)
        return [job.result for job in everything]

    def _job(self, req: GenerateRequest) -> Job:
        side = req.adapter.side(req.variant)
        if req.text is not None:
            prompt = side.parts.prompt(Example(input=req.text, target=""))
        else:
            prompt = Prompt("", req.prompt or "")
        shared, own = self._encode(prompt)
        if req.echo:  # every prompt token's log-probability: no shared cache for the text
            shared, own = [], shared + own
        model = self._model(req.adapter)
        decoder = RowDecoder(req, self.base.tokenizer, self._eos(model),
                             tuple(req.stop) + side.parts.stop)
        return Job(req, self._row(req.adapter, side, shared, own), decoder, shared + own, model)

    def _finish(self, job: Job) -> None:
        d, req = job.decoder, job.req
        if d.finish is None:
            d.finish = "length"  # max_tokens 0
        # echo gives the prompt's own tokens: the BOS a tokenizer puts first (Gemma) is not
        # in the prompt's text, so it is left out and the tokens join back to that text
        bos = self.base.bos_ids
        skip = len(bos) if bos and job.prompt_ids[:len(bos)] == bos else 0
        job.result = GenerateResult(
            text=d.text, finish_reason=d.finish,
            prompt_tokens=job.row.n_prefix + len(job.row.own), completion_tokens=d.n,
            tokens=d.tokens, token_logprobs=d.token_logprobs, top_logprobs=d.top,
            prompt_token_strs=[self.base.tokenizer.decode([t]) for t in job.prompt_ids[skip:]]
            if req.echo else None,
            prompt_token_logprobs=job.prompt_logprobs[skip:] if req.echo else None)
        if req.on_done is not None:
            req.on_done(job.result)

    def _eos(self, model) -> set[int]:
        key = id(model)
        if key not in self._eos_cache:
            self._eos_cache[key] = _eos_ids(self.base.with_model(model))
        return self._eos_cache[key]

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

    def _groups(self, reqs):
        """(model, request indices) per model: the base's view (every adapter that is not a
        full fine-tune), then each full fine-tune's own; `_batches` orders each group's rows."""
        groups: dict[int, tuple[torch.nn.Module, list[int]]] = {}
        for i, req in enumerate(reqs):
            model = self._model(req.adapter)
            groups.setdefault(id(model), (model, []))[1].append(i)
        return list(groups.values())

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
