"""Decoding for the mixed engine: each row picks, stops, streams and reports on its own.

Per step every running row picks its next token from its last logits z:

    temperature 0:  argmax z                                   (greedy, engine/generate.py's rule)
    otherwise:      sample from softmax(z / T), cut to the smallest set of tokens whose
                    probability reaches top_p (nucleus), with the row's own torch.Generator
                    seeded from the request's seed: the same seed gives the same text

and the reported log-probabilities are the model's, log softmax(z), before temperature. A row
finishes on end-of-sequence or a stop string ("stop": the text is cut before it), after
max_tokens ("length"), or when its client is gone ("cancelled", polled before every pick).
Streaming sends text as it is decoded, holding back the tail that could still become a stop
string or an unfinished UTF-8 character, so a client never sees what the final text drops.
"""

from __future__ import annotations

import torch

HELD = "\ufffd"  # what decoding shows for an incomplete UTF-8 sequence


class RowDecoder:
    """One generation row's state: what it picked, its text, and how it finished."""

    def __init__(self, req, tokenizer, eos: set[int], stop: tuple[str, ...]):
        self.req, self.tok, self.eos = req, tokenizer, eos
        self.stop = tuple(s for s in stop if s)
        self.picked: list[int] = []  # text tokens (no end-of-sequence)
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top: list[dict[str, float]] | None = [] if req.logprobs is not None else None
        self.text, self.emitted, self.n = "", 0, 0
        self.finish: str | None = None
        self.generator = None
        if req.temperature > 0:
            self.generator = torch.Generator()
            if req.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(int(req.seed))

    @property
    def done(self) -> bool:
        return self.finish is not None

    def poll_cancelled(self) -> bool:
        if self.req.cancelled is not None and self.req.cancelled():
            self.end("cancelled")
        return self.done

    def step(self, logits: torch.Tensor) -> None:
        """Pick the next token from this row's logits (vocab,) and take it."""
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        t = self._pick(logits)
        self.n += 1
        self.tokens.append(self.tok.decode([t]))
        self.token_logprobs.append(float(logp[t]))
        if self.top is not None:
            k = min(int(self.req.logprobs), logp.shape[-1])
            values, ids = torch.topk(logp, k) if k > 0 else (logp[:0], logp[:0].long())
            top: dict[str, float] = {}  # two ids may decode alike ("\ufffd"): keep the best
            for i, v in zip(ids.tolist(), values.tolist()):
                top.setdefault(self.tok.decode([i]), float(v))
            self.top.append(top)
        if t in self.eos:
            return self.end("stop")
        self.picked.append(t)
        text = self.tok.decode(self.picked, skip_special_tokens=True)
        cut = min((k for k in (text.find(s) for s in self.stop) if k >= 0), default=-1)
        self.text = text if cut < 0 else text[:cut]
        if cut >= 0:
            return self.end("stop")
        if self.n >= self.req.max_tokens:
            return self.end("length")
        self._stream(self._safe(self.text))

    def end(self, reason: str) -> None:
        self.finish = reason
        self._stream(self.text)

    def _pick(self, logits: torch.Tensor) -> int:
        if self.generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.req.temperature, dim=-1)
        if self.req.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = sorted_p.cumsum(0) - sorted_p >= self.req.top_p
            drop[0] = False  # the most likely token always stays
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p.masked_fill(drop, 0.0))
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _safe(self, text: str) -> str:
        """`text` without a tail that may still turn into a stop string or a character."""
        text = text.rstrip(HELD)
        hold = max((k for s in self.stop for k in range(1, len(s))
                    if text.endswith(s[:k])), default=0)
        return text[:len(text) - hold]

    def _stream(self, text: str) -> None:
        if self.req.on_token is not None and len(text) > self.emitted:
            self.req.on_token(text[self.emitted:])
        self.emitted = max(self.emitted, len(text))


def prompt_logprobs(logits: torch.Tensor, ids: list[int]) -> list[float | None]:
    """Each prompt token's log-probability given the ones before it; the first has none.
    `logits` (T, vocab) are the logits at the prompt's T positions."""
    if len(ids) < 2:
        return [None] * len(ids)
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    picked = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:], device=logp.device)]
    return [None] + [float(x) for x in picked.tolist()]
