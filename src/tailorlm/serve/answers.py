"""From engine results to OpenAI answers: completions and chat, whole or as stream chunks.

A Plan is one request's rows (what serve/app.py hands the scheduler) and how their results
become the answer. Rows are prompt-major: row p * n + i is choice i of prompt p, which is also
the choice's `index`. A classification adapter runs one row per prompt and repeats its
(deterministic) answer n times.

text_offset (completions logprobs) counts characters of the echoed prompt and the text, summing
the token strings: with echo the first prompt token is at 0, without it the first generated
token is at len(prompt), as OpenAI's answers have it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tailorlm.serve import schemas as S


@dataclass
class Plan:
    state: object
    route: str  # "completions" | "chat"
    body: object  # CompletionRequest | ChatRequest
    kind: str  # "classify" | "generate"
    rows: list
    texts: list[str]  # the prompts (completions) or the rendered chat / user message
    n: int  # rows per prompt

    def __post_init__(self):
        self.created = int(time.time())
        self.choices = len(self.texts) * self.body.n

    # -- whole answers -----------------------------------------------------------------------
    def answer(self, results: list, call) -> dict:
        self._count(results, call)
        usage = S.Usage(prompt_tokens=call.prompt_tokens,
                        completion_tokens=call.completion_tokens,
                        total_tokens=call.prompt_tokens + call.completion_tokens)
        choices = [self._choice(i, results) for i in range(self.choices)]
        if self.route == "chat":
            return S.ChatCompletion(id=call.id, created=self.created, model=self.body.model,
                                    choices=choices, usage=usage).model_dump()
        return S.Completion(id=call.id, created=self.created, model=self.body.model,
                            choices=choices, usage=usage).model_dump()

    def _count(self, results, call) -> None:
        per_prompt = 1 if self.kind == "classify" else self.n
        call.prompt_tokens = sum(r.prompt_tokens for r in results[::per_prompt])
        call.completion_tokens = sum(r.completion_tokens for r in results) * (
            self.body.n if self.kind == "classify" else 1)

    def _result(self, i: int, results):
        return results[i // self.body.n] if self.kind == "classify" else results[i]

    def _choice(self, i: int, results):
        r = self._result(i, results)
        if self.kind == "classify":
            ranked = dict(sorted(r.logprobs.items(), key=lambda kv: -kv[1]))
            if self.route == "chat":
                return S.ChatChoice(index=i, message=S.AssistantMessage(content=r.label),
                                    finish_reason="stop", logprobs=S.ChatLogprobs(content=[
                                        _token(r.label, r.logprobs[r.label], ranked, None)]))
            return S.CompletionChoice(index=i, text=r.label, finish_reason="stop",
                                      logprobs=S.CompletionLogprobs(
                                          tokens=[r.label], token_logprobs=[r.logprobs[r.label]],
                                          top_logprobs=[ranked], text_offset=[0]))
        finish = "stop" if r.finish_reason == "stop" else "length"
        if self.route == "chat":
            logprobs = None
            if self.body.logprobs:
                k = self.body.top_logprobs or 0
                logprobs = S.ChatLogprobs(content=[
                    _token(t, lp, top or {}, k)
                    for t, lp, top in zip(r.tokens, r.token_logprobs,
                                          r.top_logprobs or [None] * len(r.tokens))])
            return S.ChatChoice(index=i, message=S.AssistantMessage(content=r.text),
                                finish_reason=finish, logprobs=logprobs)
        prompt = self.texts[i // self.body.n]
        echo = bool(self.body.echo)
        logprobs = None
        if self.body.logprobs is not None:
            p_strs = list(r.prompt_token_strs or []) if echo else []
            p_lps = list(r.prompt_token_logprobs or []) if echo else []
            strs = p_strs + list(r.tokens)
            offsets, at = [], 0 if echo else len(prompt)
            for s in strs:
                offsets.append(at)
                at += len(s)
            logprobs = S.CompletionLogprobs(
                tokens=strs, token_logprobs=p_lps + list(r.token_logprobs),
                top_logprobs=[None] * len(p_strs) + list(r.top_logprobs or [{}] * len(r.tokens)),
                text_offset=offsets)
        return S.CompletionChoice(index=i, text=(prompt if echo else "") + r.text,
                                  finish_reason=finish, logprobs=logprobs)

    # -- stream chunks -----------------------------------------------------------------------
    def _chunk(self, choices: list[dict], usage=None, with_usage: bool = False) -> dict:
        chunk = {"id": self.call_id, "object": "chat.completion.chunk" if self.route == "chat"
                 else "text_completion", "created": self.created, "model": self.body.model,
                 "choices": choices}
        if self.body.include_usage or with_usage:
            chunk["usage"] = usage
        return chunk

    def opening(self, call) -> list[dict]:
        """Chat: one chunk per choice with the assistant's role, as OpenAI's first chunk."""
        self.call_id = call.id
        if self.route != "chat":
            return []
        return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}])
                for i in range(self.choices)]

    def piece(self, row: int, text: str) -> dict:
        """A generation row's new text (rows and choices are the same indices)."""
        if self.route == "chat":
            return self._chunk([{"index": row, "delta": {"content": text}, "logprobs": None,
                                 "finish_reason": None}])
        return self._chunk([{"index": row, "text": text, "logprobs": None,
                             "finish_reason": None}])

    def closing(self, results: list, call) -> list[dict]:
        """The last chunk of every choice (a classification's whole label), then usage."""
        self._count(results, call)
        out = []
        for i in range(self.choices):
            r = self._result(i, results)
            text = r.label if self.kind == "classify" else ""
            finish = "stop" if self.kind == "classify" or r.finish_reason == "stop" else "length"
            if self.route == "chat":
                delta = {"content": text} if text else {}
                out.append(self._chunk([{"index": i, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]))
            else:
                out.append(self._chunk([{"index": i, "text": text, "logprobs": None,
                                         "finish_reason": finish}]))
        if self.body.include_usage:
            usage = {"prompt_tokens": call.prompt_tokens,
                     "completion_tokens": call.completion_tokens,
                     "total_tokens": call.prompt_tokens + call.completion_tokens}
            out.append(self._chunk([], usage))
        return out


def _token(token: str, logprob: float, top: dict, k: int | None) -> S.TokenLogprob:
    ranked = sorted(top.items(), key=lambda kv: -kv[1])
    if k is not None:
        ranked = ranked[:k]
    return S.TokenLogprob(token=token, logprob=logprob, bytes=list(token.encode()),
                          top_logprobs=[S.TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                                        for t, v in ranked])
