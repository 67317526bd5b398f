"""The scheduler alone, with a recording fake engine: what goes into one engine call."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from tailorlm.serve.errors import APIError
from tailorlm.serve.scheduler import Scheduler


@dataclass
class Row:
    adapter: str
    text: str
    cancelled: object = None


class FakeEngine:
    """Answers each row with (adapter, text); refuses rows whose text is "bad" (ValueError);
    holds its first call until `gate` is set, so the test can queue requests behind it."""

    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []
        self.gate = threading.Event()

    def _run(self, kind, rows):
        self.gate.wait(10)
        self.calls.append((kind, [r.adapter for r in rows]))
        if any(r.text == "bad" for r in rows):
            raise ValueError("bad row")
        return [(r.adapter, r.text) for r in rows]

    def classify(self, rows):
        return self._run("classify", rows)

    def generate(self, rows, admit=None):
        return self._run("generate", rows)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_waiting_requests_of_any_adapters_leave_in_one_call_per_kind():
    engine = FakeEngine()
    s = Scheduler(engine, max_queue=16, max_batch=32)
    s.start()

    async def go():
        first = s.submit("generate", [Row("a", "x")])  # runs alone, held at the gate
        await asyncio.sleep(0.2)
        later = [s.submit("classify", [Row(name, "t")]) for name in ("b", "c", "d")]
        later += [s.submit("generate", [Row(name, "t"), Row(name, "u")]) for name in ("a", "e")]
        engine.gate.set()
        return [await t.future for t in [first, *later]]

    try:
        results = run(go())
    finally:
        s.stop()
    assert results[1] == [("b", "t")] and results[4] == [("a", "t"), ("a", "u")]
    assert engine.calls == [("generate", ["a"]), ("classify", ["b", "c", "d"]),
                            ("generate", ["a", "a", "e", "e"])]


def test_a_bad_row_fails_its_request_only():
    engine = FakeEngine()
    engine.gate.set()
    s = Scheduler(engine, max_queue=16, max_batch=32)

    async def go():
        tickets = [s.submit("classify", [Row(n, text)])
                   for n, text in (("a", "ok"), ("b", "bad"), ("c", "ok"))]
        s.start()  # all three are waiting: one batch
        out = []
        for t in tickets:
            try:
                out.append(await t.future)
            except ValueError as e:
                out.append(str(e))
        return out

    try:
        assert run(go()) == [[("a", "ok")], "bad row", [("c", "ok")]]
    finally:
        s.stop()
    assert engine.calls[0] == ("classify", ["a", "b", "c"])  # tried together first


def test_queue_depth_is_bounded_and_cancelled_requests_are_dropped():
    engine = FakeEngine()
    s = Scheduler(engine, max_queue=2, max_batch=32)

    async def go():
        a = s.submit("generate", [Row("a", "x")])
        b = s.submit("generate", [Row("b", "x")])
        with pytest.raises(APIError) as e:
            s.submit("generate", [Row("c", "x")])
        assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"
        b.abandon()  # its client went away before the batch started
        assert b.rows[0].cancelled() is True
        engine.gate.set()
        s.start()
        return await a.future

    try:
        assert run(go()) == [("a", "x")]
    finally:
        s.stop()
    assert engine.calls == [("generate", ["a"])]


def test_batches_hold_whole_requests_up_to_max_batch():
    engine = FakeEngine()
    engine.gate.set()
    s = Scheduler(engine, max_queue=16, max_batch=3)

    async def go():
        tickets = [s.submit("generate", [Row(n, "x"), Row(n, "y")]) for n in "abc"]
        s.start()
        return [await t.future for t in tickets]

    try:
        run(go())
    finally:
        s.stop()
    assert [rows for _, rows in engine.calls] == [["a", "a"], ["b", "b"], ["c", "c"]]


class AdmittingEngine(FakeEngine):
    """Generation that asks `admit` for more rows at each of its 20 decoding steps (50 ms)."""

    def generate(self, rows, admit=None):
        self.gate.wait(10)
        rows = list(rows)
        for _ in range(20):
            if admit is not None:
                rows += admit(8)
            threading.Event().wait(0.05)
        self.calls.append(("generate", [r.adapter for r in rows]))
        return [(r.adapter, r.text) for r in rows]


def test_generation_requests_join_a_running_generation_until_another_kind_waits():
    engine = AdmittingEngine()
    s = Scheduler(engine, max_queue=16, max_batch=32)
    s.start()

    async def go():
        first = s.submit("generate", [Row("a", "x")])
        await asyncio.sleep(0.1)  # `first` is in its engine call, held at the gate
        joined = s.submit("generate", [Row("b", "y"), Row("b", "z")])
        engine.gate.set()
        await asyncio.sleep(0.3)  # `joined` was admitted at a decoding step
        classified = s.submit("classify", [Row("c", "t")])
        after = s.submit("generate", [Row("d", "u")])  # not admitted: a classification waits
        return [await t.future for t in (first, joined, classified, after)]

    try:
        results = run(go())
    finally:
        s.stop()
    assert results == [[("a", "x")], [("b", "y"), ("b", "z")], [("c", "t")], [("d", "u")]]
    assert engine.calls == [("generate", ["a", "b", "b"]), ("classify", ["c"]),
                            ("generate", ["d"])]
