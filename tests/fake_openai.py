"""A small OpenAI-compatible server for tests, backed by a LocalBackend, on 127.0.0.1.

`tailor serve` does not exist yet, and the third-party servers that run here (`transformers serve`)
return no log-probabilities, so tiers (a) and (b) are tested against this one:

    FakeServer(backend, mode="echo")   /v1/completions with echo+logprobs (prompt-token log p,
                                       row 0 null, text_offset), top logprobs, generation
    mode="top"                         echo refused (400), top logprobs on generated tokens only
    mode="plain"                       logprobs ignored (like transformers serve)
    mode="chat"                        no /v1/completions (404); chat with top logprobs

It can also answer the first `fail_429` requests with 429 and `Retry-After`, and refuse requests
without `api_key` (401). Every request is counted in `requests`.
"""


import socket
import threading

import torch


class FakeServer:
    def __init__(self, backend, *, mode: str = "echo", api_key: str | None = None,
                 fail_429: int = 0, retry_after: str = "0", model_name: str = "fake-model"):
        self.backend, self.mode, self.api_key = backend, mode, api_key
        self.fail_429, self.retry_after, self.model_name = fail_429, retry_after, model_name
        self.requests = 0
        self.lock = threading.Lock()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._live = None

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self):
        from serve.live import LiveServer

        self._live = LiveServer(self._app(), port=self.port).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)

    # -- the app --------------------------------------------------------------------------
    def _app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        def error(status, message, code=None, headers=None):
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": code}}, status_code=status,
                                headers=headers)

        def gate(request: Request):
            with self.lock:
                self.requests += 1
                n = self.requests
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return error(401, "Incorrect API key provided", "invalid_api_key")
            if n <= self.fail_429:
                return error(429, "Rate limit reached", "rate_limit",
                             headers={"Retry-After": self.retry_after})
            return None

        @app.post("/v1/completions")
        async def completions(request: Request):
            refused = gate(request)
            if refused is not None:
                return refused
            if self.mode == "chat":
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            body = await request.json()
            if body.get("model") != self.model_name:
                return error(404, f"The model {body.get('model')} does not exist",
                             "model_not_found")
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            echo, logprobs = bool(body.get("echo")), body.get("logprobs")
            if self.mode != "echo" and echo and logprobs is not None:
                return error(400, "Setting 'echo' and 'logprobs' at the same time is not "
                             "supported for this model.")
            if self.mode == "plain":
                logprobs = None
            choices, usage = [], [0, 0]
            for i, prompt in enumerate(prompts):
                choice, p, c = self._complete(prompt, body.get("max_tokens", 16), echo, logprobs,
                                              body.get("stop"))
                choice["index"] = i
                choices.append(choice)
                usage[0] += p
                usage[1] += c
            return {"id": "cmpl-fake", "object": "text_completion", "created": 0,
                    "model": self.model_name, "choices": choices,
                    "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                              "total_tokens": sum(usage)}}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            refused = gate(request)
            if refused is not None:
                return refused
            body = await request.json()
            text = "".join(m["content"] for m in body["messages"])
            n = body.get("max_tokens") or body.get("max_completion_tokens") or 16
            top = body.get("top_logprobs") if body.get("logprobs") and self.mode != "plain" \
                else None
            choice, p, c = self._complete(text, n, False, top, body.get("stop"))
            message = {"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": choice["text"]},
                       "logprobs": None}
            if top:
                first = choice["logprobs"]["top_logprobs"][0]
                message["logprobs"] = {"content": [{
                    "token": choice["logprobs"]["tokens"][0], "logprob": 0.0, "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": None}
                                     for t, v in first.items()]}]}
            return {"id": "chat-fake", "object": "chat.completion", "created": 0,
                    "model": self.model_name, "choices": [message],
                    "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}

        return app

    @torch.inference_mode()
    def _complete(self, prompt: str, max_tokens: int, echo: bool, logprobs, stop):
        """Greedy completion; with `logprobs`, per-token log p and the top ones."""
        be, tok = self.backend, self.backend.tokenizer
        enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [o[0] for o in enc["offset_mapping"]]
        n_prompt = len(ids)
        gen: list[int] = []
        k = int(logprobs) if logprobs is not None else 0
        tops: list[dict] = []
        gen_lps: list[float] = []
        prompt_lp = None
        if echo and logprobs is not None:  # one forward gives the echo and the first token
            prompt_lp = torch.log_softmax(be.model(torch.tensor([ids])).logits[0].float(), -1)
        for step in range(max(int(max_tokens), 0)):
            if step == 0 and prompt_lp is not None:
                lp = prompt_lp[-1]
            else:
                logits = be.model(torch.tensor([ids + gen])).logits[0, -1].float()
                lp = torch.log_softmax(logits, -1)
            nxt = int(lp.argmax())
            if nxt == tok.eos_token_id:
                break
            gen.append(nxt)
            gen_lps.append(float(lp[nxt]))
            if k:
                values, idx = lp.topk(k)
                tops.append({tok.decode([int(i)]): float(v) for v, i in zip(values, idx)})
            text = tok.decode(gen)
            if stop and any(s in text for s in stop):
                break
        text = tok.decode(gen)
        if stop:
            cuts = [text.find(s) for s in stop if s in text]
            text = text[:min(cuts)] if cuts else text
        choice = {"text": (prompt if echo else "") + text, "finish_reason": "stop",
                  "logprobs": None}
        if logprobs is not None:
            toks = [tok.decode([i]) for i in gen]
            offs = [len(prompt) + len(tok.decode(gen[:j])) for j in range(len(gen))]
            entry = {"tokens": toks, "token_logprobs": gen_lps, "top_logprobs": tops,
                     "text_offset": offs}
            if echo:
                lp = prompt_lp
                prompt_lps = [None] + [float(lp[j - 1, ids[j]]) for j in range(1, n_prompt)]
                entry = {"tokens": [tok.decode([i]) for i in ids] + toks,
                         "token_logprobs": prompt_lps + gen_lps,
                         "top_logprobs": [None] * n_prompt + tops,
                         "text_offset": offsets + offs}
            choice["logprobs"] = entry
        return choice, n_prompt, len(gen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
