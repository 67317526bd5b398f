"""Bad input: every request below gets a 4xx in OpenAI's envelope, never a 500, and the server
answers normally afterwards (tests/serve/conftest.py's live server, tiny model, context 512)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from serve.conftest import KEY, make_app
from serve.live import LiveServer

AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def post(server, path: str, body, headers=None, method="POST"):
    """(status, parsed JSON body, headers) of one raw request; `body` bytes are sent as is."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=data, headers={**AUTH, **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None, dict(r.getheaders())
    finally:
        conn.close()


def assert_envelope(status, body, expected=None):
    assert 400 <= status < 500, (status, body)
    if expected is not None:
        assert status == expected, (status, body)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]


def assert_healthy(server):
    status, body, _ = post(server, "/health", b"", method="GET")
    assert status == 200 and body == {"status": "ok"}
    status, body, _ = post(server, "/v1/completions", {"model": "tiny", "prompt": "the cat",
                                                         "max_tokens": 2})
    assert status == 200 and body["usage"]["completion_tokens"] <= 2


OK = {"model": "tiny", "prompt": "the cat", "max_tokens": 2}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
LONG = "the cat sat on the mat " * 120  # 600+ tokens: over the tiny model's 512

CASES = [
    # (id, path, body, expected status or None for any 4xx, expected param)
    ("malformed json", "/v1/completions", b'{"model": "tiny", "prompt": ', 400, None),
    ("not utf-8", "/v1/completions", b"\xff\xfe{}", 400, None),
    ("body a string", "/v1/completions", b'"hello"', 400, None),
    ("body a list", "/v1/completions", b"[1, 2]", 400, None),
    ("body null", "/v1/completions", b"null", 400, None),
    ("body a number", "/v1/chat/completions", b"42", 400, None),
    ("empty body", "/v1/completions", b"", 400, None),
    ("deep nesting", "/v1/completions", b"[" * 100000 + b"]" * 100000, 400, None),
    ("NaN temperature", "/v1/completions",
     b'{"model": "tiny", "prompt": "x", "temperature": NaN}', 400, "temperature"),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, "model"),
    ("missing prompt", "/v1/completions", {"model": "tiny"}, 400, "prompt"),
    ("max_tokens a string", "/v1/completions", {**OK, "max_tokens": "5"}, 400, "max_tokens"),
    ("prompt a number", "/v1/completions", {**OK, "prompt": 5}, 400, "prompt"),
    ("prompt token ids", "/v1/completions", {**OK, "prompt": [1, 2, 3]}, 400, "prompt"),
    ("temperature a word", "/v1/completions", {**OK, "temperature": "hot"}, 400,
     "temperature"),
    ("stream a string", "/v1/completions", {**OK, "stream": "yes"}, 400, "stream"),
    ("n a float", "/v1/completions", {**OK, "n": 1.5}, 400, "n"),
    ("messages a string", "/v1/chat/completions", {**CHAT, "messages": "hi"}, 400,
     "messages"),
    ("huge max_tokens", "/v1/completions", {**OK, "max_tokens": 10**12}, 400, "max_tokens"),
    ("negative max_tokens", "/v1/completions", {**OK, "max_tokens": -1}, 400, "max_tokens"),
    ("negative chat max", "/v1/chat/completions", {**CHAT, "max_completion_tokens": -5}, 400,
     "max_completion_tokens"),
    ("n=1000", "/v1/completions", {**OK, "n": 1000}, 400, "n"),
    ("n=0", "/v1/completions", {**OK, "n": 0}, 400, "n"),
    ("temperature 999999", "/v1/completions", {**OK, "temperature": 999999}, 400,
     "temperature"),
    ("top_p -1", "/v1/completions", {**OK, "top_p": -1}, 400, "top_p"),
    ("logprobs 99", "/v1/completions", {**OK, "logprobs": 99}, 400, "logprobs"),
    ("logprobs -1", "/v1/completions", {**OK, "logprobs": -1}, 400, "logprobs"),
    ("top_logprobs 50", "/v1/chat/completions", {**CHAT, "logprobs": True,
                                                 "top_logprobs": 50}, 400, "top_logprobs"),
    ("five stops", "/v1/completions", {**OK, "stop": list("abcde")}, 400, "stop"),
    ("unknown field", "/v1/completions", {**OK, "max_token": 5}, 400, "max_token"),
    ("penalty not offered", "/v1/completions", {**OK, "presence_penalty": 1.0}, 400,
     "presence_penalty"),
    ("tools not offered", "/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]},
     400, "tools"),
    ("unknown role", "/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard",
                                                                    "content": "x"}]}, 400,
     "messages"),
    ("empty messages", "/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("empty prompt", "/v1/completions", {**OK, "prompt": ""}, 400, "prompt"),
    ("blank prompt", "/v1/completions", {**OK, "prompt": "   "}, 400, "prompt"),
    ("no prompts", "/v1/completions", {**OK, "prompt": []}, 400, "prompt"),
    ("empty user message to an adapter", "/v1/chat/completions",
     {**CHAT, "model": "sentiment", "messages": [{"role": "user", "content": ""}]}, 400,
     "messages"),
    ("prompt over the context", "/v1/completions", {**OK, "prompt": LONG}, 400, "prompt"),
    ("prompt + max_tokens over", "/v1/completions",
     {**OK, "prompt": "the cat sat on the mat " * 60, "max_tokens": 500}, 400, "prompt"),
    ("adapter prompt over", "/v1/completions",
     {**OK, "model": "sentiment", "prompt": LONG}, 400, "prompt"),
    ("stream with logprobs", "/v1/completions", {**OK, "stream": True, "logprobs": 1}, 400,
     "stream"),
    ("unknown model", "/v1/completions", {**OK, "model": "no-such-adapter"}, 404, "model"),
    ("unknown version", "/v1/completions", {**OK, "model": "sentiment:99"}, 404, "model"),
    ("unknown alias", "/v1/completions", {**OK, "model": "sentiment@nope"}, 404, "model"),
    ("echo to a classifier", "/v1/completions", {**OK, "model": "sentiment", "echo": True},
     422, "echo"),
    ("chat to an adapter without a user message", "/v1/chat/completions",
     {**CHAT, "model": "sentiment", "messages": [{"role": "system", "content": "x"}]}, 422,
     "messages"),
]
NAMES = ["../etc/passwd", "sentiment/../../x", "/etc/passwd", "..", "%2e%2e%2fetc",
         "Sentiment", "a\x00b", "sentiment@../x", "sentiment:../1", "sentiment:-1",
         "x" * 300, "", "C:\\windows", "sentiment@1"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_the_envelope(server, case):
    _, path, body, expected, param = case
    status, answer, _ = post(server, path, body)
    assert_envelope(status, answer, expected)
    if param is not None:
        assert answer["error"]["param"] == param, answer


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_model_names_never_become_paths(server, name):
    status, answer, _ = post(server, "/v1/completions", {**OK, "model": name})
    assert_envelope(status, answer)
    assert status in (400, 404) and answer["error"]["param"] == "model"


def test_ten_megabyte_body_is_413(server):
    big = json.dumps({**OK, "prompt": "a" * 10_000_000}).encode()
    status, answer, _ = post(server, "/v1/completions", big)
    assert_envelope(status, answer, 413)
    assert answer["error"]["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"x" * 1_000_000 for _ in range(10))
    conn.request("POST", "/v1/completions", body=chunks, headers=AUTH, encode_chunked=True)
    try:
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["error"]["code"] == "request_too_large"
    except (ConnectionError, http.client.HTTPException):
        pass  # the server may close before the client has sent everything; it stays up
    conn.close()


def test_wrong_method_and_unknown_route(server):
    status, answer, _ = post(server, "/v1/completions", b"", method="GET")
    assert_envelope(status, answer, 405)
    status, answer, _ = post(server, "/v1/engines", OK)
    assert_envelope(status, answer, 404)


def test_dropped_stream_stops_its_generation(server):
    """A client that goes away mid-stream: its row is cancelled, the server stays healthy.
    Each streamed token is slowed (10 ms) so the 400-token generation outlasts the client."""
    before = _count(server, 'status="499"')
    engine = server.app.tailor.scheduler.engine
    real = engine.generate

    def slowed(rows, **kw):
        for row in rows:
            if row.on_token is not None:
                row.on_token = lambda piece, emit=row.on_token: (time.sleep(0.01), emit(piece))
        return real(rows, **kw)
    engine.generate = slowed
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = json.dumps({"model": "tiny", "prompt": "the cat", "max_tokens": 400,
                       "temperature": 1.0, "stream": True, "seed": 1}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 + f"\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    seen = b""
    while b"data: " not in seen:  # the stream started
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    sock.close()
    deadline = time.time() + 20
    while _count(server, 'status="499"') == before and time.time() < deadline:
        time.sleep(0.1)
    engine.generate = real
    assert _count(server, 'status="499"') == before + 1
    assert_healthy(server)


def _count(server, label: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics", headers=AUTH)
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("tailor_requests_total") and label in line)


def test_server_is_healthy_after_the_bad_inputs(server):
    assert_healthy(server)
    assert _count(server, 'status="500"') == 0


def _slow(app, seconds):
    engine = app.tailor.scheduler.engine
    real = engine.generate

    def slow(rows, **kw):
        time.sleep(seconds)
        return real(rows, **kw)
    engine.generate = slow


def test_full_queue_is_429_with_retry_after(registry_root):
    app = make_app(registry_root, max_queue=1)
    _slow(app, 0.3)
    statuses, errors = [], []
    with LiveServer(app) as s:
        def one():
            status, body, headers = post(s, "/v1/completions", OK)
            statuses.append(status)
            if status == 429:
                errors.append((body, headers))
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert_healthy(s)
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    body, headers = errors[0]
    assert_envelope(429, body, 429)
    assert body["error"]["type"] == "rate_limit_error" and int(headers["retry-after"]) >= 1


def test_request_timeout_is_503_and_the_server_recovers(registry_root):
    app = make_app(registry_root, request_timeout_s=0.3)
    _slow(app, 1.0)
    with LiveServer(app) as s:
        client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model="tiny", prompt="the cat", max_tokens=2)
        assert e.value.status_code == 503 and e.value.body["code"] == "timeout"
        engine = app.tailor.scheduler.engine
        engine.generate = type(engine).generate.__get__(engine)
        time.sleep(1.0)  # the slow batch ends
        assert client.completions.create(model="tiny", prompt="the cat", max_tokens=2).usage


def test_a_client_that_leaves_while_waiting_is_dropped(registry_root):
    app = make_app(registry_root)
    _slow(app, 0.5)
    with LiveServer(app) as s:
        body = json.dumps(OK).encode()
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\n" + f"Authorization: Bearer {KEY}\r\nContent-Length: "
                     f"{len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.1)
        sock.close()  # gone before its answer
        deadline = time.time() + 10
        while _count(s, 'status="499"') == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert _count(s, 'status="499"') == 1
        assert_healthy(s)
