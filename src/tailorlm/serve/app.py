"""The OpenAI-compatible app: one base model, many adapters, one engine thread.

    GET  /health                  {"status": "ok"}, no key needed (load balancers, probes)
    GET  /v1/models               the base and every servable reference (`parent` = the base)
    GET  /v1/models/{id}          one of them
    POST /v1/completions          prompt (a string or a list), echo + logprobs, n, stream
    POST /v1/chat/completions     messages rendered with the base's chat template, stream
    GET  /metrics                 Prometheus (serve/metrics.py)

What a request gets depends on the model it names (serve/adapters.py):

- the base, or a generation adapter: decoded text. Completions read the prompt as raw text for
  the base; a generation adapter reads it as its input (rendered by its template). Chat renders
  the messages with the base tokenizer's chat template for the base, and gives an adapter the
  last user message as its input. `echo` + `logprobs` return the prompt tokens' log-probabilities
  (the first one null), which is what remote label scoring (tier a) sends: max_tokens=0,
  echo=true, logprobs=1.
- a classification adapter: the label chosen by label likelihood, through the same calls as
  `tailor eval`. The answer's text is the label NAME as in the training data (`card_arrival`),
  not its verbalization (`card arrival`): the name is the stable contract with a client, the
  words are what the model reads and may change between versions. `logprobs` always holds every
  label's raw log p(verbalization | prompt) (before any calibration), keyed by label name:
  completions `logprobs.top_logprobs[0]`, chat `logprobs.content[0].top_logprobs`. `n` copies
  the one deterministic answer; `echo` is refused (422).

Limits (flags of `tailor serve`; serve/schemas.py checks the rest): `n` <= --max-n, `max_tokens`
<= --max-tokens-limit, prompt + max_tokens <= the model's context (400
context_length_exceeded), at most MAX_PROMPTS prompts per request. `stream` with `logprobs` or
`echo` is refused (400): chunks carry text only. Every answer has `usage`; a stream has it in
one chunk before `data: [DONE]` when `stream_options.include_usage` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from tailorlm.serve import schemas as S
from tailorlm.serve.adapters import AdapterCache
from tailorlm.serve.auth import BodyLimit, KeyAuth
from tailorlm.serve.config import ServeConfig
from tailorlm.serve.engine import BatchEngine, ClassifyRequest, GenerateRequest
from tailorlm.serve.errors import APIError, bad_request, envelope, timed_out
from tailorlm.serve.metrics import Metrics
from tailorlm.serve.scheduler import Dropped, Scheduler

log = logging.getLogger("tailorlm.serve")
MAX_PROMPTS = 256  # prompts in one completions request (remote scoring sends one per label)


def create_app(backend, *, base_name: str | None = None, config: ServeConfig | None = None,
               registry_root: str | Path | None = None, adapters: dict[str, Path] | None = None,
               api_key: str | None = None):
    """The app serving `backend` (a LocalBackend) and the adapters of `registry_root` and
    `adapters` ({name: folder}); with `api_key`, every route but /health needs it."""
    config = config or ServeConfig()
    base_name = base_name or Path(backend.name).name
    metrics = Metrics()
    engine = BatchEngine(backend)
    scheduler = Scheduler(engine, metrics, max_queue=config.max_queue,
                          max_batch=config.max_batch)
    cache = AdapterCache(engine, scheduler, backend, base_name=base_name,
                         registry_root=Path(registry_root) if registry_root else None,
                         adapters=adapters, metrics=metrics,
                         max_resident_bytes=int(config.max_resident_mb * 1e6))
    state = State(backend, config, metrics, scheduler, cache, base_name)

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="tailorlm", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.tailor = state

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        message = "Not found: " + request.url.path if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(envelope(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        return JSONResponse(envelope(400, "Invalid request"), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request, exc):
        log.error("unexpected error", exc_info=exc)
        return JSONResponse(envelope(500, "The server had an error while processing your "
                                     "request"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models():
        return S.ModelList(data=[S.ModelCard(**m) for m in cache.listing(state.created)])

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        for m in cache.listing(state.created):
            if m["id"] == model_id:
                return S.ModelCard(**m)
        raise APIError(404, f"The model {model_id!r} does not exist", param="model",
                       code="model_not_found")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await state.handle(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await state.handle(request, "chat")

    outer = BodyLimit(KeyAuth(app, api_key), int(config.max_body_mb * 1e6))
    outer.tailor, outer.fastapi = state, app  # for tests and embedding
    return outer


class State:
    """What the routes share; `handle` is one request from body to answer."""

    def __init__(self, backend, config, metrics, scheduler, cache, base_name):
        self.backend, self.config, self.metrics = backend, config, metrics
        self.scheduler, self.cache, self.base_name = scheduler, cache, base_name
        self.created = int(time.time())
        model_config = getattr(backend.model, "config", None)
        self.context = int(getattr(model_config, "max_position_embeddings", 0) or 1 << 30)

    async def handle(self, request: Request, route: str):
        call = Call(self, route)
        with finished_on_error(call):
            body = await read_body(request, S.ChatRequest if route == "chat"
                                   else S.CompletionRequest)
            call.model = body.model
            call.lease = await self.cache.acquire(body.model)
            plan = self.plan(body, route, call.lease.served)
            call.prompt_text = plan.texts
            queue = self.listen(plan.rows) if body.stream else None
            ticket = self.scheduler.submit(plan.kind, plan.rows)
        if body.stream:
            return StreamingResponse(self.stream(call, plan, ticket, queue),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Tailor-Served": call.label})
        with finished_on_error(call):
            results = await self.wait(request, ticket, call)
            answer = plan.answer(results, call)
        call.finish(200)
        return JSONResponse(answer, headers={"X-Tailor-Served": call.label})

    # -- what to run -------------------------------------------------------------------------
    def plan(self, body, route: str, served) -> Plan:
        cfg = self.config
        if body.n > cfg.max_n:
            raise bad_request(f"n is {body.n}; this server answers at most {cfg.max_n} choices "
                              f"per request (--max-n)", "n")
        max_tokens = body.answer_tokens if route == "chat" else body.max_tokens
        if max_tokens > cfg.max_tokens_limit:
            which = "max_completion_tokens" if route == "chat" and \
                body.max_completion_tokens is not None else "max_tokens"
            raise bad_request(f"{which} is {max_tokens}; this server generates at most "
                              f"{cfg.max_tokens_limit} tokens per answer (--max-tokens-limit)",
                              which)
        echo = route == "completions" and bool(body.echo)
        if route == "completions":
            logprobs = body.logprobs
        else:
            logprobs = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream and (logprobs is not None or echo):
            raise bad_request("stream with logprobs or echo is not supported by this server: "
                              "ask without stream", "stream", "unsupported_parameter")
        is_base = served is self.cache.engine.base_served
        if route == "completions":
            texts = body.prompts
            if not texts or len(texts) > MAX_PROMPTS:
                raise bad_request(f"prompt holds {len(texts)} prompts; send 1 to {MAX_PROMPTS}",
                                  "prompt")
        elif is_base:
            texts = [self.render_chat(body.messages)]
        else:
            users = [m for m in body.messages if m.role == "user"]
            if not users:
                raise APIError(422, f"{body.model} is an adapter: it answers the last user "
                               f"message, and the messages hold none", param="messages",
                               code="unsupported_for_model")
            texts = [users[-1].text]
        if any(not t.strip() for t in texts):
            raise bad_request("the prompt is empty: send some text", "prompt" if route ==
                              "completions" else "messages")
        for t in texts:  # the adapter's rendering adds to this; the engine checks the rest
            n_prompt = len(self.backend.bos_ids) + self.backend.count_tokens(t)
            need = n_prompt + (max_tokens if served.kind != "classification" else 1)
            if need > self.context:
                raise bad_request(f"This model's maximum context length is {self.context} "
                                  f"tokens; the prompt has {n_prompt} and max_tokens asks "
                                  f"{max_tokens} more", "prompt" if route == "completions"
                                  else "messages", "context_length_exceeded")
        if served.kind == "classification":
            if echo:
                raise APIError(422, f"{body.model} is a classification adapter: it answers a "
                               f"label, it does not echo prompts", param="echo",
                               code="unsupported_for_model")
            rows = [ClassifyRequest(adapter=served, text=t) for t in texts]
            return Plan(self, route, body, "classify", rows, texts, 1)
        rows = []
        for t in texts:
            for i in range(body.n):
                rows.append(GenerateRequest(
                    adapter=served, prompt=t if is_base else None,
                    text=None if is_base else t, max_tokens=max_tokens,
                    temperature=body.temperature if body.temperature is not None else 1.0,
                    top_p=body.top_p if body.top_p is not None else 1.0, stop=body.stops,
                    seed=None if body.seed is None else (body.seed + i) % 2**64,
                    logprobs=logprobs,
                    echo=echo))
        return Plan(self, route, body, "generate", rows, texts, body.n)

    def render_chat(self, messages) -> str:
        tok = self.backend.tokenizer
        plain = [{"role": m.role if m.role != "developer" else "system", "content": m.text}
                 for m in messages]
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        else:  # a tokenizer without a chat template: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"
        bos = self.backend.bos_text  # the engine puts BOS first itself
        return text[len(bos):] if bos and text.startswith(bos) else text

    # -- waiting -----------------------------------------------------------------------------
    async def wait(self, request: Request, ticket, call) -> list:
        timeout = self.config.request_timeout_s - (time.perf_counter() - call.t0)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({ticket.future, gone}, timeout=max(timeout, 0.001),
                                         return_when=asyncio.FIRST_COMPLETED)
            if ticket.future in done:
                return _result(ticket.future)
            ticket.abandon()
            if gone in done:
                raise APIError(499, "client closed the request")
            raise timed_out(self.config.request_timeout_s)
        finally:
            gone.cancel()

    @staticmethod
    def listen(rows) -> asyncio.Queue:
        """A queue that receives (row index, text piece) as the worker decodes."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for j, row in enumerate(rows):
            if isinstance(row, GenerateRequest):
                row.on_token = lambda piece, j=j: loop.call_soon_threadsafe(
                    queue.put_nowait, (j, piece))
        return queue

    async def stream(self, call, plan, ticket, queue):
        status, get = 200, None
        try:
            for chunk in plan.opening(call):
                yield _sse(chunk)
            deadline = call.t0 + self.config.request_timeout_s
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, ticket.future},
                                             timeout=max(deadline - time.perf_counter(), 0.001),
                                             return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    j, piece = get.result()
                    call.first_token()
                    yield _sse(plan.piece(j, piece))
                    continue
                get.cancel()
                if ticket.future not in done:  # out of time
                    ticket.abandon()
                    status = 503
                    yield _sse(timed_out(self.config.request_timeout_s).body())
                    break
                while not queue.empty():
                    j, piece = queue.get_nowait()
                    call.first_token()
                    yield _sse(plan.piece(j, piece))
                try:
                    results = _result(ticket.future)
                except APIError as e:
                    status = e.status
                    yield _sse(e.body())
                    break
                except Exception as e:  # noqa: BLE001 - a bug: the stream ends with the error
                    log.error("engine call failed", exc_info=e)
                    status = 500
                    yield _sse(envelope(500, "The server had an error while processing your "
                                        "request"))
                    break
                for chunk in plan.closing(results, call):
                    call.first_token()
                    yield _sse(chunk)
                break
            if status == 200:
                yield "data: [DONE]\n\n"
        except BaseException:  # the client went away mid-stream: stop its rows
            ticket.abandon()
            status = 499
            raise
        finally:
            if get is not None:
                get.cancel()
            call.finish(status)


@contextmanager
def finished_on_error(call):
    """Record the request's end with its error's status (500 for anything unexpected), and
    let the error go on to the handlers that answer it."""
    try:
        yield
    except APIError as e:
        call.finish(e.status)
        raise
    except BaseException:
        call.finish(500)
        raise


def _result(future):
    try:
        return future.result()
    except ValueError as e:  # the engine refused a row: bad input (a prompt over the context)
        raise bad_request(str(e), "prompt", "context_length_exceeded") from None
    except Dropped:
        raise APIError(499, "client closed the request") from None


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def read_body(request: Request, cls):
    raw = await request.body()
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("We could not parse the JSON body of your request: send a JSON object "
                          "with Content-Type application/json", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request(f"The request body must be a JSON object, not {type(obj).__name__}",
                          code="invalid_json")
    try:
        return cls.model_validate(obj)
    except ValidationError as e:
        raise validation_error(e) from None


def validation_error(e: ValidationError) -> APIError:
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    param = loc[0] if loc else None
    where = ".".join(loc)
    msg = str(err.get("msg", ""))
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {where}", param,
                           "unknown_parameter")
    if err["type"] == "missing":
        return bad_request(f"Missing required parameter: {where!r}", param, "missing_parameter")
    if "NEUTRAL:" in msg:
        name = msg.split("NEUTRAL:")[1]
        return bad_request(f"{name} is not supported by this server: leave it unset (or at its "
                           f"default)", name, "unsupported_parameter")
    if "STOP" in msg and err["type"] == "value_error":
        return bad_request("stop: send at most 4 sequences", "stop")
    return bad_request(f"Invalid value for {where!r}: {msg}", param)


class Call:
    """One request's bookkeeping: its lease, tokens, time; metrics and one log line at the end."""

    def __init__(self, state: State, route: str):
        self.state, self.route = state, route
        self.id = ("chatcmpl-" if route == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.t0 = time.perf_counter()
        self.model, self.lease, self.prompt_text = None, None, None
        self.prompt_tokens = self.completion_tokens = 0
        self.ttft_done = self.done = False

    @property
    def label(self) -> str:
        return self.lease.label if self.lease is not None else "-"

    def first_token(self) -> None:
        if not self.ttft_done:
            self.ttft_done = True
            self.state.metrics.ttft.labels(self.label).observe(time.perf_counter() - self.t0)

    def finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        m, seconds = self.state.metrics, time.perf_counter() - self.t0
        if self.lease is not None:
            self.state.cache.release(self.lease)
        m.requests.labels(self.label, self.route, str(status)).inc()
        m.latency.labels(self.label, self.route).observe(seconds)
        m.tokens.labels(self.label, "prompt").inc(self.prompt_tokens)
        m.tokens.labels(self.label, "completion").inc(self.completion_tokens)
        line = (f"request id={self.id} route={self.route} adapter={self.label} status={status} "
                f"prompt_tokens={self.prompt_tokens} completion_tokens={self.completion_tokens} "
                f"ms={seconds * 1000:.0f}")
        if self.state.config.log_prompts and self.prompt_text is not None:
            line += f" prompt={json.dumps(self.prompt_text, ensure_ascii=False)}"
        log.info(line)


from tailorlm.serve.answers import Plan  # noqa: E402 (the answers need nothing above)
