"""The API key and the body-size limit: two small ASGI middlewares in front of every route.

Auth. With a key set (from the environment variable --api-key-env names, TAILOR_API_KEY by
default; never from a file or a flag, so it stays out of shell history and process lists),
every route but `GET /health` needs `Authorization: Bearer <key>`: the OpenAI routes, /metrics,
and any path that does not exist (it answers 401, not 404, so a scan learns nothing). vLLM's
key once guarded only the /v1 prefix and left /tokenize, /score and /invocations open; one
middleware over all paths, with a test that walks every route, closes that door. The key is
compared with `hmac.compare_digest`, which takes the same time wherever the strings differ.

Body size. The body is read here, up to --max-body-mb, before any route parses it: a larger
Content-Length is refused at once, and a chunked body is cut off when it crosses the limit, so
a 10 GB upload costs the server 413 and at most the limit in memory.
"""

from __future__ import annotations

import hmac
import json

from tailorlm.serve.errors import envelope

PUBLIC = {"/health"}
# A body over the limit is still read (and dropped) up to this many bytes before the 413, so a
# client that sends its whole body before reading the answer gets the answer, not a reset.
DRAIN_MAX = 64 * 1024 * 1024


async def _send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class KeyAuth:
    def __init__(self, app, key: str | None):
        self.app, self.key = app, key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.key is None or scope["path"] in PUBLIC:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
            return await _send_json(send, 401, envelope(
                401, "Incorrect or missing API key: send the header 'Authorization: Bearer "
                "<key>' with the key the server was started with", code="invalid_api_key"),
                {"WWW-Authenticate": "Bearer"})
        return await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(send, receive, 0)
        chunks, size = [], 0
        while True:  # read the whole body here, bounded, then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                if not message.get("more_body"):
                    return await self._too_large(send)
                return await self._too_large(send, receive, size)
            chunks.append(body)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)

    async def _too_large(self, send, receive=None, drained: int = 0):
        while receive is not None and drained <= DRAIN_MAX:  # the rest of the body, dropped
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        mb = self.max_bytes / 1e6
        await _send_json(send, 413, envelope(
            413, f"The request body is larger than this server accepts ({mb:g} MB; "
            f"--max-body-mb)", code="request_too_large"), {"Connection": "close"})
