"""Which model a request names, and the adapters kept in memory for it.

A request's `model` is one of (nothing else: it never becomes a path):

    the base's name           smollm2-135m              the base model, no adapter
    a --adapter name          router                    a folder given at start (NAME=DIR)
    a registry reference      support-router            the latest version
                              support-router:3          one version
                              support-router@production where the alias points now

Names are checked with the registry's own rule (registry/names.py: lower-case letters, digits,
'.', '_', '-'; no '/', no '..'); a string that fails it is a 400 before anything is looked up,
and a valid name nobody registered is a 404 `model_not_found`. Files are found by the registry
from the version's digests (registry/store.py), never from the request's text.

Resident adapters are an LRU keyed by what they hold (a registry version's manifest digest, so
`x@production` and `x:3` share one copy), under --max-resident-mb by `Served.nbytes` (the base
is not counted). A reference is looked up again when its last lookup is older than REF_TTL_S,
so a `tailor registry alias` move is served within a second, without a restart (plus the new
version's load time, when it is not resident yet). A request holds a
lease on the adapter it started with until its answer is complete: eviction skips leased
adapters, so a request already running finishes on its version even if the alias moved or the
cache needs the room (the cache may then sit over its cap until the lease ends).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tailorlm.errors import TailorError
from tailorlm.serve.errors import APIError, bad_request, model_not_found

log = logging.getLogger("tailorlm.serve")
REF_TTL_S = 0.25  # how stale a lookup may be: a moved alias is served within a second


@dataclass(eq=False)
class Entry:
    key: str
    served: object  # Served
    leases: int = 0


@dataclass(eq=False)
class Lease:
    served: object  # Served
    label: str  # the version served ("name:3"), for logs and metrics
    entry: Entry | None = None  # None: the base, never evicted


class AdapterCache:
    def __init__(self, engine, scheduler, base, *, base_name: str,
                 registry_root: Path | None = None, adapters: dict[str, Path] | None = None,
                 max_resident_bytes: int = 2 * 1024**3, metrics=None):
        from tailorlm.registry.names import check_name

        self.engine, self.scheduler, self.base = engine, scheduler, base
        self.base_name = base_name
        self.registry_root = registry_root
        self.adapters = {check_name(n, "adapter name"): Path(d)
                         for n, d in (adapters or {}).items()}
        self.max_bytes, self.metrics = max_resident_bytes, metrics
        self._registry = None  # opened on the event loop's thread (SQLite is per thread)
        self._refs: dict[str, tuple[float, object]] = {}  # model string -> (looked up, Version)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()  # evictions in flight (kept from the GC)

    @property
    def registry(self):
        if self._registry is None and self.registry_root is not None:
            from tailorlm.registry import Registry

            self._registry = Registry(self.registry_root)
        return self._registry

    @property
    def resident_bytes(self) -> int:
        return sum(e.served.nbytes for e in self._entries.values())

    # -- a request's model ---------------------------------------------------------------------
    async def acquire(self, model: str) -> Lease:
        """The Served `model` names, leased until `release`; APIError 400/404/422 otherwise."""
        if model == self.base_name:
            return Lease(self.engine.base_served, self.base_name)
        if model in self.adapters:
            folder = self.adapters[model]
            key, label, where = f"dir:{folder.resolve()}", model, lambda: folder
        else:
            version = self._lookup(model)
            key, label = version.manifest, version.ref
            where = lambda: self.registry.path(version)  # noqa: E731
        entry = await self._resident(key, label, where)
        entry.leases += 1
        self._entries.move_to_end(key)
        return Lease(entry.served, label, entry)

    def release(self, lease: Lease) -> None:
        if lease.entry is not None:
            lease.entry.leases -= 1
            if self.resident_bytes > self.max_bytes:
                task = asyncio.get_running_loop().create_task(self._evict())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _lookup(self, model: str):
        from tailorlm.registry.names import parse_ref
        from tailorlm.methods.artifact import card_base_model as card_base_model_of

        try:
            ref = parse_ref(model)
        except TailorError as e:
            raise bad_request(f"model {e}", "model", "invalid_model_name") from None
        if self.registry is None:
            raise model_not_found(model)
        now = time.monotonic()
        seen = self._refs.get(model)
        if seen is not None and now - seen[0] < REF_TTL_S:
            return seen[1]
        try:
            version = self.registry.resolve(ref)
        except TailorError:
            raise model_not_found(model) from None
        if not self._same_base(card_base_model_of(version.card)):
            raise APIError(400, f"{version.ref} was made on another base model than this server "
                           f"serves ({self.base.identity})", param="model",
                           code="base_model_mismatch")
        if len(self._refs) > 4096:  # every entry is a valid, existing reference; still bounded
            self._refs.clear()
        self._refs[model] = (now, version)
        return version

    def _same_base(self, base: dict) -> bool:
        sha, identity = base.get("sha256"), base.get("identity")
        if sha and self.base.sha256:
            return sha == self.base.sha256
        return not identity or identity == self.base.identity

    async def _resident(self, key: str, label: str, where) -> Entry:
        if key in self._entries:
            return self._entries[key]
        if key in self._loading:  # another request is loading it: wait for that load
            await asyncio.shield(self._loading[key])
            return self._entries[key]
        fut = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        try:
            folder = where()
            served = await self.scheduler.call(lambda: self.engine.load(folder, label))
        except Exception as e:  # noqa: BLE001 - a damaged adapter must not take the server down
            if not isinstance(e, TailorError):
                log.error("loading %s failed", label, exc_info=e)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise APIError(422, f"{label} cannot be served: {reason}", param="model",
                           code="unsupported_for_model") from None
        finally:
            del self._loading[key]
            fut.set_result(None)
        entry = Entry(key, served)
        self._entries[key] = entry
        log.info("loaded %s (%s, %.1f MB)", label, served.method, served.nbytes / 1e6)
        await self._evict(keep=key)
        return entry

    async def _evict(self, keep: str | None = None) -> None:
        while self.resident_bytes > self.max_bytes:
            victim = next((e for k, e in self._entries.items() if e.leases == 0 and k != keep),
                          None)
            if victim is None:
                break  # everything left is in use (or just loaded): over the cap until released
            del self._entries[victim.key]
            log.info("evicted %s (%.1f MB)", victim.served.name, victim.served.nbytes / 1e6)
            await self.scheduler.call(lambda s=victim.served: self.engine.unload(s))
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.resident.set(len(self._entries))
            self.metrics.resident_bytes.set(self.resident_bytes)

    @property
    def resident(self) -> list[str]:
        return [e.served.name for e in self._entries.values()]

    # -- GET /v1/models ------------------------------------------------------------------------
    def listing(self, created: int) -> list[dict]:
        """The base, every --adapter name, and every registry reference made on this base:
        NAME (latest), NAME@ALIAS, NAME:VERSION."""
        from tailorlm.methods.artifact import load_card
        from tailorlm.methods.artifact import card_base_model as card_base_model_of

        out = [dict(id=self.base_name, created=created, owned_by="tailorlm",
                    root=self.base.identity, parent=None, kind="generation", method="base")]
        for name, folder in self.adapters.items():
            try:
                card = load_card(folder)
            except (OSError, ValueError):
                card = {}
            out.append(_card_entry(name, card, created, self.base_name, name))
        if self.registry is None:
            return out
        latest: dict[str, object] = {}
        for v in self.registry.versions():
            if not self._same_base(card_base_model_of(v.card)):
                continue
            made = _epoch(v.created, created)
            out.append(_card_entry(v.ref, v.card, made, self.base_name, v.ref))
            for alias in v.aliases:
                out.append(_card_entry(f"{v.name}@{alias}", v.card, made, self.base_name, v.ref))
            latest[v.name] = v
        for name, v in latest.items():
            out.append(_card_entry(name, v.card, _epoch(v.created, created), self.base_name,
                                   v.ref))
        return out


def _card_entry(model_id: str, card: dict, created: int, parent: str, root: str) -> dict:
    task = card.get("task") or {}
    kind = task.get("kind") or "generation"
    return dict(id=model_id, created=created, owned_by="tailorlm", root=root, parent=parent,
                kind=kind, method=card.get("method") or "?",
                labels=list(task.get("labels") or []) if kind == "classification" else None)


def _epoch(stamp: str, default: int) -> int:
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return default
