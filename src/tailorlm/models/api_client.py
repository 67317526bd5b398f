"""One client for every call to an OpenAI-compatible endpoint: cached, bounded, retried, capped.

    ApiClient(url, model, api_key).request("completions", {"prompt": ..., "max_tokens": 8})
        canonical request ─► response cache (sqlite, TAILORLM_HOME/api-cache.sqlite) ─► hit: free
                         └─► caps (calls, dollars) ─► POST with retries ─► usage, latency ─► cache

- **Cache.** Keyed by endpoint, model, route and the request as canonical JSON (sorted keys), so a
  rerun or a resumed comparison costs nothing. Only successful answers are stored.
- **Bounded concurrency.** `request_many` runs at most `concurrency` requests at once (a thread pool:
  the calls wait on the network, not the CPU) and returns the answers in request order.
- **Retries.** 429, 5xx, timeouts and dropped connections are retried up to `max_retries` times,
  waiting what `Retry-After` says when the server says it, else exponential backoff with full
  jitter (min(cap, base * 2^attempt) * U(0.5, 1)). 401/403/404 fail at once with one line that says
  what to fix; a 400 is `ApiRejected` (a feature the endpoint does not offer: the probe reads it).
- **Caps.** `max_calls` and `max_usd` are checked before each call; reaching one raises
  `ApiCapReached` (a TailorError: one line), so a comparison stops that run and keeps its results.
- **Usage.** Prompt and completion tokens from each answer's `usage`, priced per million tokens;
  the latency of every real call (p50/p95); cache hits counted apart and never priced.

The HTTP layer is the official `openai` client (its types, errors and connection pool), with its own
retries off: ours count every attempt, honour caps between attempts and take an injectable `sleep`
so tests do not wait.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from tailorlm.errors import TailorError
from tailorlm.paths import tailorlm_home

CACHE_FILE = "api-cache.sqlite"
ROUTES = ("completions", "chat")


class ApiCapReached(TailorError):
    """A hard cap (--max-api-calls, --max-api-usd) would be passed by the next call."""


class ApiRejected(TailorError):
    """The endpoint refused the request as malformed (400/422): a feature it does not offer."""


class ApiNotFound(TailorError):
    """404: no such model, or no such route (a chat-only server has no /v1/completions)."""


class ApiUnavailable(TailorError):
    """The endpoint kept failing (429/5xx/timeouts) through every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Usage:
    calls: int = 0  # answered network calls (retries not counted: see `retries`)
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered call
    # tokens of the answers served from the cache: not spent now, but what the queries cost
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    def since(self, mark: "Usage") -> "Usage":
        return Usage(self.calls - mark.calls, self.cache_hits - mark.cache_hits,
                     self.retries - mark.retries, self.prompt_tokens - mark.prompt_tokens,
                     self.completion_tokens - mark.completion_tokens, self.usd - mark.usd,
                     self.latencies[len(mark.latencies):],
                     self.cached_prompt_tokens - mark.cached_prompt_tokens,
                     self.cached_completion_tokens - mark.cached_completion_tokens)

    def snapshot(self) -> "Usage":
        return replace(self, latencies=list(self.latencies))

    def to_row(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else None
        return {"api_calls": self.calls, "api_cache_hits": self.cache_hits,
                "api_retries": self.retries, "api_prompt_tokens": self.prompt_tokens,
                "api_completion_tokens": self.completion_tokens, "api_usd": self.usd,
                "api_latency_ms_p50": None if lat is None else float(np.percentile(lat, 50)),
                "api_latency_ms_p95": None if lat is None else float(np.percentile(lat, 95))}


@dataclass
class Limits:
    max_calls: int | None = None  # answered calls this client may make; None = no cap
    max_usd: float | None = None
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TailorError(f"{name} must be at least 0, not {value}")


class ResponseCache:
    """Answers by request key, in one sqlite file shared by every endpoint and run."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else tailorlm_home() / CACHE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                         "endpoint TEXT, model TEXT, request TEXT, response TEXT, created REAL)")
        self._db.commit()

    @staticmethod
    def key(endpoint: str, model: str, route: str, request: dict) -> str:
        blob = json.dumps([endpoint, model, route, request], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?",
                                   (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, endpoint: str, model: str, request: dict, response: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                             (key, endpoint, model, json.dumps(request, sort_keys=True),
                              json.dumps(response), time.time()))
            self._db.commit()


class ApiClient:
    def __init__(self, url: str, model: str, api_key: str | None = None, *,
                 limits: Limits | None = None, concurrency: int = 4, max_retries: int = 5,
                 timeout: float = 60.0, backoff: float = 0.5, max_wait: float = 30.0,
                 cache: ResponseCache | None | bool = True, sleep=time.sleep):
        try:
            import openai  # the official client: request building, error types, connection pool
        except ImportError:
            raise TailorError("remote endpoints need the openai package: "
                              "pip install 'tailorlm[api]'") from None

        if concurrency < 1:
            raise TailorError(f"concurrency must be at least 1, not {concurrency}")
        self.url, self.model = url.rstrip("/"), model
        self.host = urlparse(self.url).netloc or self.url
        self.limits = limits or Limits()
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff, self.max_wait, self.sleep = backoff, max_wait, sleep
        self.cache = ResponseCache() if cache is True else (cache or None)
        self.usage = Usage()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._client = openai.OpenAI(base_url=self.url, api_key=api_key or "none",
                                     max_retries=0, timeout=timeout)

    # -- one request ----------------------------------------------------------------------
    def request(self, route: str, body: dict) -> dict:
        """The endpoint's answer to `body` (without `model`) on `route`, as a plain dict."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        key = None
        if self.cache is not None:
            key = ResponseCache.key(self.url, self.model, route, body)
            hit = self.cache.get(key)
            if hit is not None:
                usage = hit.get("usage") or {}
                with self._lock:
                    self.usage.cache_hits += 1
                    self.usage.cached_prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    self.usage.cached_completion_tokens += int(
                        usage.get("completion_tokens") or 0)
                return hit
        self._reserve()
        try:
            answer, seconds = self._post_with_retries(route, body)
        finally:
            with self._lock:
                self._in_flight -= 1
        self._account(answer, seconds)
        if self.cache is not None:
            self.cache.put(key, self.url, self.model, body, answer)
        return answer

    def request_many(self, route: str, bodies: list[dict]) -> list[dict]:
        """Answers in order, at most `concurrency` requests in flight. The first error (a cap,
        a refused key) stops the rest: requests not yet sent are cancelled."""
        if self.concurrency == 1 or len(bodies) <= 1:
            return [self.request(route, b) for b in bodies]
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self.request, route, b) for b in bodies]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    # -- caps, retries, accounting ----------------------------------------------------------
    def _reserve(self) -> None:
        with self._lock:
            lim, used = self.limits, self.usage
            if lim.max_calls is not None and used.calls + self._in_flight >= lim.max_calls:
                raise ApiCapReached(f"API call cap reached ({lim.max_calls} calls to {self.host}):"
                                    " raise --max-api-calls to go on (answers so far are cached)")
            if lim.max_usd is not None and used.usd >= lim.max_usd:
                raise ApiCapReached(f"API spending cap reached (${used.usd:.4f} of "
                                    f"${lim.max_usd:g} at {self.host}): raise --max-api-usd to "
                                    "go on (answers so far are cached)")
            self._in_flight += 1

    def _post_with_retries(self, route: str, body: dict) -> tuple[dict, float]:
        import openai

        for attempt in range(self.max_retries + 1):
            start = time.perf_counter()
            try:
                answer = self._post(route, body)
                return answer, time.perf_counter() - start
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise TailorError(f"{self.host} refused the API key ({e.status_code}): set the "
                                  "variable named by --api-key-env to a valid key") from None
            except openai.NotFoundError as e:
                raise ApiNotFound(f"{self.host}: 404 for model {self.model!r} on /{_path(route)}"
                                  f" ({_message(e)}): check --endpoint (it ends in /v1) and "
                                  "--model (GET /v1/models lists them)") from None
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                raise ApiRejected(f"{self.host} rejected the request ({e.status_code}): "
                                  f"{_message(e)}") from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as e:
                if attempt == self.max_retries:
                    status = getattr(e, "status_code", None)
                    raise ApiUnavailable(f"{self.host} kept failing ({status or type(e).__name__})"
                                         f" after {self.max_retries} retries: is the endpoint "
                                         "up?", status) from None
                with self._lock:
                    self.usage.retries += 1
                self.sleep(self._wait(attempt, getattr(e, "response", None)))
            except openai.APIStatusError as e:  # another 4xx: not worth retrying
                raise TailorError(f"{self.host}: {e.status_code} {_message(e)}") from None
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, response) -> float:
        """Seconds before the next attempt: Retry-After if given, else jittered backoff."""
        headers = getattr(response, "headers", None) or {}
        after = headers.get("retry-after")
        if after is not None:
            try:
                return min(float(after), self.max_wait)
            except ValueError:
                pass  # an HTTP date: fall back to backoff
        return min(self.max_wait, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)

    def _post(self, route: str, body: dict) -> dict:
        api = self._client.completions if route == "completions" else self._client.chat.completions
        known, extra = _split_known(api.create, body)
        answer = api.create(model=self.model, **known, extra_body=extra or None)
        return answer.model_dump(exclude_unset=False)

    def _account(self, answer: dict, seconds: float) -> None:
        usage = answer.get("usage") or {}
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        with self._lock:
            u = self.usage
            u.calls += 1
            u.prompt_tokens += p
            u.completion_tokens += c
            u.usd += (p * self.limits.usd_per_1m_input + c * self.limits.usd_per_1m_output) / 1e6
            u.latencies.append(seconds)

    def price(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.limits.usd_per_1m_input
                + completion_tokens * self.limits.usd_per_1m_output) / 1e6


def _split_known(create, body: dict) -> tuple[dict, dict]:
    """The request's fields the SDK names as arguments, and the rest (sent as extra body)."""
    import inspect

    names = set(inspect.signature(create).parameters)
    known = {k: v for k, v in body.items() if k in names}
    return known, {k: v for k, v in body.items() if k not in names}


def _path(route: str) -> str:
    return "completions" if route == "completions" else "chat/completions"


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"]).splitlines()[0][:200]
    return str(e).splitlines()[0][:200]
