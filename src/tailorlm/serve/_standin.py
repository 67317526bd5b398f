"""TEMPORARY stand-in for `tailorlm.engine.mixed` (issue 12, part 3): deleted when it lands.

It offers the interface SERVE.md fixes (`BatchEngine`, `Served`, `ClassifyRequest`,
`ClassifyResult`, `GenerateRequest`, `GenerateResult`) but serves ONE ROW AT A TIME with the
existing engine: a classification row is `engine.scoring.score_labels` on `adapter.bind(base)`,
the same calls `engine.evaluate.label_scores` makes (so its label equals `tailor eval`'s), and a
generation row is a plain one-row decoding loop (sampling, logprobs, echo and streaming, which
`engine.generate` does not offer). Nothing is mixed: the real engine batches rows of different
adapters into one forward pass. serve/engine.py picks the real engine as soon as
`tailorlm/engine/mixed.py` exists.

Where this stand-in fixes something SERVE.md leaves open:
- a row it cannot run (prompt + max_tokens over the model's context) raises ValueError; the
  scheduler runs the rows of a failed batch one by one and answers that row's request 400;
- `Served.nbytes` is the size of the adapter's weight files (a LoRA's merged copy that
  `bind` makes is not counted);
- echo returns the prompt's own tokens (never the BOS the engine puts first); the first one's
  log-probability is None, as the interface says.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt, encode_prompt
from tailorlm.engine.scoring import score_labels
from tailorlm.methods.artifact import load_adapter, load_card
from tailorlm.methods.contract import groups_of
from tailorlm.models.backend import LocalBackend


@dataclass(eq=False)
class Served:
    name: str
    method: str
    kind: str  # "classification" | "generation"
    labels: list[str] | None
    nbytes: int
    card: dict
    adapter: object = field(default=None, repr=False)  # None: the base model itself
    task: Task | None = field(default=None, repr=False)  # labels and words, from the card


@dataclass
class ClassifyRequest:
    adapter: Served
    text: str


@dataclass
class ClassifyResult:
    label: str
    logprobs: dict[str, float]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class GenerateRequest:
    adapter: Served
    prompt: str | None = None
    text: str | None = None
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    on_token: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] | None = None


@dataclass
class GenerateResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    prompt_token_strs: list[str] | None = None
    prompt_token_logprobs: list[float | None] | None = None


class BatchEngine:
    def __init__(self, base: LocalBackend):
        self.base = base
        self.base_served = Served(name=base.name, method="base", kind="generation", labels=None,
                                  nbytes=0, card={})

    # -- adapters ---------------------------------------------------------------------------
    def load(self, adapter_dir: Path, name: str) -> Served:
        adapter_dir = Path(adapter_dir)
        adapter, card = load_adapter(adapter_dir), load_card(adapter_dir)
        t = card.get("task") or {}
        kind = t.get("kind") or "generation"
        task = Task(name=t.get("name") or name, kind=kind, examples=[],
                    labels=list(t.get("labels") or []), verbalizer=dict(t.get("verbalizer") or {}),
                    description=t.get("description") or "")
        nbytes = sum(p.stat().st_size for p in adapter_dir.rglob("*.safetensors"))
        adapter.bind(self.base)  # read the weights now: a damaged adapter fails its load
        return Served(name=name, method=adapter.method, kind=kind,
                      labels=list(task.labels) if kind == "classification" else None,
                      nbytes=nbytes, card=card, adapter=adapter, task=task)

    def unload(self, served: Served) -> None:
        served.adapter = None  # the bound copies (a merged LoRA, a full model) go with it

    # -- classification ---------------------------------------------------------------------
    @torch.inference_mode()
    def classify(self, reqs: list[ClassifyRequest]) -> list[ClassifyResult]:
        return [self._classify_one(r) for r in reqs]

    def _classify_one(self, req: ClassifyRequest) -> ClassifyResult:
        served = req.adapter
        example = Example(input=req.text, target="")
        task = served.task.with_examples([example])
        (_, part, _), = groups_of(served.adapter, task)
        prompt = part.prompt(example)
        bound = part.bind(self.base)
        words = part.continuations(task)
        shared, own = encode_prompt(bound, prompt)
        _check_context(bound, len(shared) + len(own) + max(len(bound.encode(w)) for w in words))
        raw = score_labels(bound, [prompt], words)  # (1, L)
        best = int(part.adjust(raw).argmax(axis=1)[0])
        return ClassifyResult(label=task.labels[best],
                              logprobs={lab: float(raw[0, j]) for j, lab in enumerate(task.labels)},
                              prompt_tokens=len(shared) + len(own),
                              completion_tokens=len(bound.encode(words[best])))

    # -- generation -------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, reqs: list[GenerateRequest]) -> list[GenerateResult]:
        return [self._generate_one(r) for r in reqs]

    def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        served = req.adapter
        if served.adapter is None:  # the base: raw text
            bound, prompt, stops = self.base, Prompt("", req.prompt or ""), tuple(req.stop)
        else:
            bound = served.adapter.bind(self.base)
            prompt = served.adapter.prompt(Example(input=req.text or "", target=""))
            stops = tuple(req.stop) + tuple(served.adapter.stop)
        tok, model = bound.tokenizer, bound.model
        shared, own = encode_prompt(bound, prompt)
        ids = shared + own
        if not ids:
            raise ValueError("the prompt is empty")
        n_bos = len(bound.bos_ids)
        _check_context(bound, len(ids) + req.max_tokens)

        cache, n_virtual = bound.virtual_prefix() if bound.virtual_prefix is not None else (None, 0)
        cache = copy.deepcopy(cache)
        n = n_virtual + len(ids)
        out = model(input_ids=torch.tensor([ids]),
                    attention_mask=torch.ones((1, n), dtype=torch.long),
                    position_ids=torch.arange(n_virtual, n)[None], cache=cache, use_cache=True,
                    logits_to_keep=0 if req.echo else 1)
        prompt_strs = prompt_lps = None
        if req.echo:  # the prompt's own tokens (BOS left out), the first without a log p
            logp = torch.log_softmax(out.logits[0].float(), -1)  # (len(ids), V)
            prompt_strs = [tok.decode([t]) for t in ids[n_bos:]]
            prompt_lps = [None if j == n_bos else float(logp[j - 1, ids[j]])
                          for j in range(n_bos, len(ids))]

        gen = torch.Generator().manual_seed(req.seed if req.seed is not None
                                            else int.from_bytes(os.urandom(6), "little"))
        eos = _eos_ids(bound)
        picked: list[int] = []
        tokens, lps, tops = [], [], ([] if req.logprobs is not None else None)
        text, sent, finish = "", 0, "length"
        pos = n
        for step in range(req.max_tokens):
            if req.cancelled is not None and req.cancelled():
                finish = "cancelled"
                break
            logits = out.logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            t = _pick(logits, req.temperature, req.top_p, gen)
            if t in eos:
                finish = "stop"
                break
            picked.append(t)
            tokens.append(tok.decode([t]))
            lps.append(float(logp[t]))
            if tops is not None:
                top = {}
                if req.logprobs:
                    values, idx = logp.topk(min(req.logprobs, logp.numel()))
                    for v, i in zip(values, idx):  # descending: alike strings keep the best
                        top.setdefault(tok.decode([int(i)]), float(v))
                top.setdefault(tokens[-1], lps[-1])  # the chosen token is always there
                tops.append(top)
            full = tok.decode(picked, skip_special_tokens=True)
            cut = min((k for k in (full.find(s) for s in stops if s) if k >= 0), default=-1)
            text = full if cut < 0 else full[:cut]
            if cut >= 0:
                finish = "stop"
            safe = len(text) if cut >= 0 else _safe_end(text, stops)
            if req.on_token is not None and safe > sent:
                req.on_token(text[sent:safe])
                sent = safe
            if cut >= 0 or step == req.max_tokens - 1:
                break
            out = model(input_ids=torch.tensor([[t]]),
                        attention_mask=torch.ones((1, pos + 1), dtype=torch.long),
                        position_ids=torch.tensor([[pos]]), cache=out.cache, use_cache=True,
                        logits_to_keep=1)
            pos += 1
        if req.on_token is not None and len(text) > sent and finish != "cancelled":
            req.on_token(text[sent:])
        return GenerateResult(text=text, finish_reason=finish, prompt_tokens=len(ids),
                              completion_tokens=len(picked), tokens=tokens, token_logprobs=lps,
                              top_logprobs=tops, prompt_token_strs=prompt_strs,
                              prompt_token_logprobs=prompt_lps)


def context_length(backend) -> int:
    config = getattr(backend.model, "config", None)
    return int(getattr(config, "max_position_embeddings", 0) or 1 << 30)


def _check_context(backend, n_tokens: int) -> None:
    limit = context_length(backend)
    if n_tokens > limit:
        raise ValueError(f"This model's maximum context length is {limit} tokens; the request "
                         f"needs {n_tokens} (prompt and answer)")


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be streamed: not a trailing part that may begin a stop string,
    nor a half-decoded character (U+FFFD)."""
    end = len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                end = min(end, len(text[:end]) - k)
                break
    return end


def _eos_ids(backend) -> set[int]:
    ids = {backend.tokenizer.eos_token_id}
    config_eos = getattr(getattr(backend.model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos is not None:
        ids.update(config_eos)
    ids.discard(None)
    return ids
