"""One worker thread runs the engine; requests wait in a bounded queue and leave it in batches.

    request (event loop) ── submit(rows) ─► queue (<= --max-queue) ─► worker thread
                                                                     │
        every round, the worker takes whatever is waiting (up to --max-batch rows, whole
        requests only, any adapters) and makes at most two engine calls:
            engine.classify(all classification rows)   one mixed batch
            engine.generate(all generation rows)       one mixed batch, which admits
                                                       generation requests that arrive while
                                                       it decodes (continuous batching)
        and hands each request its rows' results as they finish ◄──┘

Torch on a CPU computes one batch at a time well and two at once badly, so one thread owns the
engine: adapter loads and unloads run on it too (`call`), never beside a batch. Generation
requests that arrive while generation rows decode join them at the next step, while nothing else
waits; a classification request or an adapter load that arrives stops the admitting, so the
decoding drains and the next round serves it. Other requests that arrive while a batch runs wait
and form the next one. A request whose client went away or whose
time ran out before its batch started is dropped there; one that is running stops at its next
token (its rows' `cancelled()` turns true). If an engine call fails, its requests are run again
one by one, so one bad row fails one request, not its batch-mates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from tailorlm.serve.errors import queue_full

log = logging.getLogger("tailorlm.serve")


class Dropped(Exception):
    """The request was cancelled (client gone, time out) before its batch started."""


@dataclass(eq=False)
class Ticket:
    kind: str  # "classify" | "generate" | "call"
    rows: list = field(default_factory=list)
    fn: Callable[[], Any] | None = None
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    answered: bool = False  # every row's result handed over (generation answers row by row)

    def cancel(self) -> None:
        self.cancel_event.set()

    def abandon(self) -> None:
        """Cancel, and take whatever the future ends with: nobody waits for it any more."""
        self.cancel()
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def resolve(self, result=None, error: BaseException | None = None) -> None:
        def settle():
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        self.loop.call_soon_threadsafe(settle)


class Scheduler:
    def __init__(self, engine, metrics=None, *, max_queue: int = 64, max_batch: int = 32):
        self.engine, self.metrics = engine, metrics
        self.max_queue, self.max_batch = max_queue, max_batch
        self._waiting: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="tailor-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        return len(self._waiting)

    # -- the event loop's side -----------------------------------------------------------------
    def submit(self, kind: str, rows: list) -> Ticket:
        """Queue one request's rows; 429 (APIError) when --max-queue requests already wait."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(kind, rows=rows, future=loop.create_future(), loop=loop)
        for row in rows:  # a generation row stops at its next token once the ticket is cancelled
            if hasattr(row, "cancelled"):
                row.cancelled = ticket.cancelled
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise queue_full(1)
            self._waiting.append(ticket)
            self._gauge()
            self._cond.notify()
        return ticket

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the worker thread (adapter loads), between batches; not limited by the
        queue depth (it serves requests already admitted)."""
        loop = asyncio.get_running_loop()
        ticket = Ticket("call", fn=fn, future=loop.create_future(), loop=loop)
        with self._cond:
            self._waiting.appendleft(ticket)
            self._cond.notify()
        return await ticket.future

    # -- the worker's side ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if self._stop:
                    for t in self._waiting:
                        t.resolve(error=RuntimeError("the server is shutting down"))
                    return
                calls, batch = self._take()
                self._gauge()
            for t in calls:
                try:
                    t.resolve(t.fn())
                except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                    t.resolve(error=e)
            batch = [t for t in batch if not self._dropped(t)]
            group = [t for t in batch if t.kind == "classify"]
            if group:
                self._run_group("classify", self.engine.classify, group)
            group = [t for t in batch if t.kind == "generate"]
            if group:
                self._run_generate(group)

    def _take(self) -> tuple[list[Ticket], list[Ticket]]:
        calls = [t for t in self._waiting if t.kind == "call"]
        batch, rows = [], 0
        for t in self._waiting:
            if t.kind == "call":
                continue
            if batch and rows + len(t.rows) > self.max_batch:
                break
            batch.append(t)
            rows += len(t.rows)
        taken = set(map(id, calls + batch))
        self._waiting = deque(t for t in self._waiting if id(t) not in taken)
        return calls, batch

    def _dropped(self, t: Ticket) -> bool:
        if t.cancelled():
            t.resolve(error=Dropped())
            return True
        return False

    def _run_group(self, kind: str, run, group: list[Ticket]) -> None:
        rows = [r for t in group for r in t.rows]
        if self.metrics is not None:
            self.metrics.batch.labels(kind).observe(len(rows))
        try:
            results = run(rows)
        except Exception as e:  # noqa: BLE001 - find the request that failed, alone
            if len(group) == 1:
                self._error(group[0], e)
                return
            for t in group:
                self._fail(t, run)
            return
        at = 0
        for t in group:
            t.resolve(results[at:at + len(t.rows)])
            at += len(t.rows)

    def _run_generate(self, group: list[Ticket]) -> None:
        """One engine.generate call for `group`, admitting waiting generation requests at its
        decoding steps; each request is answered as soon as its last row finishes."""
        tickets = list(group)

        def admit(room: int) -> list:
            taken = self._admit(room)
            self._watch(taken)
            tickets.extend(taken)
            return [r for t in taken for r in t.rows]

        self._watch(group)
        if self.metrics is not None:
            self.metrics.batch.labels("generate").observe(sum(len(t.rows) for t in group))
        try:
            results = self.engine.generate([r for t in group for r in t.rows], admit=admit)
        except Exception:  # noqa: BLE001 - find the request that failed, alone
            for t in tickets:
                if not t.answered:
                    self._fail(t, self.engine.generate)
            return
        at = 0  # the call's results: its own rows, then the admitted ones, in order
        for t in tickets:
            if not t.answered:
                t.answered = True
                t.resolve(results[at:at + len(t.rows)])
            at += len(t.rows)

    def _watch(self, tickets: list[Ticket]) -> None:
        """Answer each ticket when its last row's result arrives (GenerateRequest.on_done)."""
        for t in tickets:
            results = [None] * len(t.rows)
            left = [len(t.rows)]
            for i, row in enumerate(t.rows):
                def done(result, t=t, i=i, results=results, left=left):
                    results[i] = result
                    left[0] -= 1
                    if left[0] == 0:
                        t.answered = True
                        t.resolve(results)
                row.on_done = done

    def _admit(self, room: int) -> list[Ticket]:
        """Waiting generation requests (whole, in order) that fit in `room` rows; none while a
        request of another kind or an adapter load waits (the decoding then drains for it)."""
        with self._cond:
            if self._stop or any(t.kind != "generate" for t in self._waiting):
                return []
            taken = []
            for t in self._waiting:
                if len(t.rows) > room:
                    break
                if not self._dropped(t):
                    taken.append(t)
                    room -= len(t.rows)
            ids = set(map(id, taken))
            self._waiting = deque(t for t in self._waiting
                                  if id(t) not in ids and not t.cancelled())
            self._gauge()
            return taken

    def _fail(self, t: Ticket, run) -> None:
        try:
            t.resolve(run(t.rows))
        except Exception as e:  # noqa: BLE001 - the request answers it (400 or 500)
            self._error(t, e)

    def _error(self, t: Ticket, e: Exception) -> None:
        if not isinstance(e, ValueError):  # ValueError: the engine refused a row (bad input)
            log.error("engine call failed", exc_info=e)
        t.resolve(error=e)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue.set(sum(t.kind != "call" for t in self._waiting))
