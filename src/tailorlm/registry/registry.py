"""The adapter registry: immutable versions, aliases with history, lineage.

    reg = Registry()                                   the default store (default_root)
    v = reg.push("runs/t/adapters/lora-k16-s0", "support-router", alias="staging")
    reg.alias("support-router", "production", 3, expect=2)      compare-and-swap
    reg.rollback("support-router", "production")                where it pointed before
    adapter = reg.load("support-router@production")
    reg.history("support-router"), reg.diff("support-router:2", "support-router:3")

One store on disk:

    <root>/index.sqlite        the index (WAL): versions, files, aliases, alias log, data
    <root>/blobs/..            every file once, named by its sha256 (registry/store.py)
    <root>/write.lock          writers hold it shared; `gc` takes it alone

How a write stays whole (a crash at any point leaves the old state or the new one): the blobs
are written aside, fsynced and renamed first; the version row, its file rows and any alias move
are then one SQLite transaction. Until it commits no reader can see the version; once it does,
every blob it names is on disk. Readers never lock: WAL gives each read a snapshot.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tailorlm.errors import TailorError
from tailorlm.registry import schema
from tailorlm.registry.lineage import flat, lineage_of
from tailorlm.registry.names import Ref, check_alias, check_name, parse_ref
from tailorlm.registry.store import BlobStore, check_relpath

INDEX = "index.sqlite"
# lineage keys `diff` leaves out: the comparison's copy of what recipe, metrics and costs show
REPEATED = ("comparison.plan", "comparison.config", "comparison.costs", "comparison.metrics",
            "comparison.score", "comparison.seed", "comparison.k", "comparison.method")
LOCK = "write.lock"


def default_root() -> Path:
    from tailorlm.paths import tailorlm_home

    env = os.environ.get("TAILORLM_REGISTRY")
    return Path(env) if env else tailorlm_home() / "registry"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        return "unknown"


@dataclass
class Version:
    id: int
    name: str
    version: int
    manifest: str
    method: str
    card: dict
    lineage: dict
    size: int
    created: str
    parent: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class Registry:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = BlobStore(self.root)
        self.db = schema.connect(self.root / INDEX)
        schema.migrate(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    @contextmanager
    def _writing(self):
        """Shared hold of the write lock for the whole write (blobs, then the transaction): `gc`
        takes it exclusively, so it never deletes a blob a write in flight is about to name."""
        with open(self.root / LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def push(self, folder: str | Path, name: str, *, alias: str | None = None, reason: str = "",
             parent: str | None = None, comparison: dict | None = None,
             data: dict | None = None, user: str | None = None) -> Version:
        """Store an adapter folder as the next version of `name` (and point `alias` at it).

        `comparison`: the comparison run it came from (registry/comparison.py finds it for a
        folder under a comparison's OUT/adapters); `data`: {"train": Task, "test": Task}, the rows
        it was fitted and evaluated on, kept so an upgrade can re-run it. Pushing a folder whose
        files equal an existing version's returns that version.
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        parent_version = self.resolve(parent) if parent else None
        folder = Path(folder)
        if not (folder / "adapter.json").is_file():
            raise TailorError(f"{folder} is not a tailorlm adapter folder (no adapter.json); "
                              f"push a folder that `tailor tune` or `tailor compare` wrote")
        adapter = _read_json(folder / "adapter.json")
        card = _read_json(folder / "card.json") if (folder / "card.json").is_file() else {}
        if comparison is None:
            from tailorlm.registry.comparison import comparison_of

            comparison, found = comparison_of(folder, card)
            data = data if data is not None else found
        lineage = lineage_of(card, adapter, comparison=comparison,
                             parent=parent_version.ref if parent_version else None)
        with self._writing():
            files = [(rel, *self.store.put_file(folder / rel)) for rel in _folder_files(folder)]
            manifest = manifest_digest([(rel, digest) for rel, digest, _ in files])
            stored = {role: self._put_task(task) for role, task in (data or {}).items()}
            with self._transaction() as db:
                row = db.execute("SELECT id FROM versions WHERE name = ? AND manifest = ?",
                                 (name, manifest)).fetchone()
                if row is not None:
                    version_id = row["id"]
                else:
                    number = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions "
                                        "WHERE name = ?", (name,)).fetchone()[0]
                    version_id = db.execute(
                        "INSERT INTO versions (name, version, manifest, method, card, lineage, "
                        "parent_id, size, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (name, number, manifest, adapter.get("method", "?"), json.dumps(card),
                         json.dumps(lineage), parent_version.id if parent_version else None,
                         sum(size for _, _, size in files), now())).lastrowid
                    db.executemany("INSERT INTO files (version_id, path, sha256, size) "
                                   "VALUES (?, ?, ?, ?)",
                                   [(version_id, rel, d, size) for rel, d, size in files])
                    db.executemany("INSERT INTO data (version_id, role, fingerprint, sha256, n) "
                                   "VALUES (?, ?, ?, ?, ?)",
                                   [(version_id, role, *info) for role, info in stored.items()])
                if alias is not None:
                    self._move(db, name, alias, version_id, None, reason or "push", user)
        return self._version(version_id)

    def _put_task(self, task) -> tuple[str, str, int]:
        rows = [{"input": e.input, "target": e.target, "label": e.label,
                 "references": list(e.references), "extra": e.extra} for e in task.examples]
        blob = json.dumps({"task": {"name": task.name, "kind": task.kind, "labels": task.labels,
                                    "verbalizer": task.verbalizer,
                                    "description": task.description},
                           "examples": rows}, sort_keys=True, ensure_ascii=False).encode()
        return task.fingerprint(), self.store.put_bytes(blob), len(task)

    def alias(self, name: str, alias: str, version: int | str, *, expect: int | None = None,
              reason: str = "", user: str | None = None) -> tuple[int | None, int]:
        """Point NAME@ALIAS at VERSION; with `expect`, only if it still points at `expect`.
        Returns (version before, version after)."""
        check_name(name)
        check_alias(alias)
        number = _version_number(version)
        with self._writing(), self._transaction() as db:
            row = db.execute("SELECT id FROM versions WHERE name = ? AND version = ?",
                             (name, number)).fetchone()
            if row is None:
                raise TailorError(f"{name}:{number} does not exist; `tailor registry list "
                                  f"{name}` shows its versions")
            return self._move(db, name, alias, row["id"], expect, reason, user)

    def _move(self, db, name, alias, version_id, expect, reason, user, undoes=None):
        current = self._alias_version(db, name, alias)
        if expect is not None and current != expect:
            now_at = f"points at {current}" if current is not None else "is not set"
            raise TailorError(f"{name}@{alias} {now_at}, not {expect} (--expect {expect}): "
                              f"someone moved it; see `tailor registry history {name} --alias "
                              f"{alias}`, then move it again")
        target = db.execute("SELECT version FROM versions WHERE id = ?",
                            (version_id,)).fetchone()["version"]
        if current == target:
            return current, target
        db.execute("INSERT INTO aliases (name, alias, version_id) VALUES (?, ?, ?) "
                   "ON CONFLICT (name, alias) DO UPDATE SET version_id = excluded.version_id",
                   (name, alias, version_id))
        db.execute("INSERT INTO alias_log (name, alias, from_version, to_version, time, user, "
                   "reason, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (name, alias, current, target, now(), user or who(), reason, undoes))
        return current, target

    @staticmethod
    def _alias_version(db, name, alias) -> int | None:
        row = db.execute("SELECT v.version FROM aliases a JOIN versions v ON v.id = a.version_id"
                         " WHERE a.name = ? AND a.alias = ?", (name, alias)).fetchone()
        return row["version"] if row else None

    def rollback(self, name: str, alias: str, *, expect: int | None = None, reason: str = "",
                 user: str | None = None) -> tuple[int | None, int]:
        """Move NAME@ALIAS back to where it pointed before its last move not yet rolled back
        (rolling back twice goes back two moves). Returns (version before, version after)."""
        check_name(name)
        check_alias(alias)
        with self._writing(), self._transaction() as db:
            undone, move = set(), None
            for entry in db.execute("SELECT * FROM alias_log WHERE name = ? AND alias = ? "
                                    "ORDER BY id DESC", (name, alias)):
                if entry["undoes"] is not None:
                    undone.add(entry["undoes"])
                elif entry["id"] not in undone:
                    move = entry
                    break
            if move is None:
                raise TailorError(f"{name}@{alias} has no move to roll back; `tailor registry "
                                  f"history {name}` shows its moves")
            if move["from_version"] is None:
                raise TailorError(f"{name}@{alias} pointed nowhere before {move['time']} (it was"
                                  f" created then): move it with `tailor registry alias`")
            row = db.execute("SELECT id FROM versions WHERE name = ? AND version = ?",
                             (name, move["from_version"])).fetchone()
            return self._move(db, name, alias, row["id"], expect,
                              reason or f"rollback of move {move['id']}", user,
                              undoes=move["id"])

    # -- reading --------------------------------------------------------------------------------

    def resolve(self, ref: str | Ref) -> Version:
        """The version a reference names: NAME (latest), NAME:VERSION or NAME@ALIAS."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        db = self.db
        if ref.alias is not None:
            row = db.execute("SELECT v.id FROM aliases a JOIN versions v ON v.id = a.version_id "
                             "WHERE a.name = ? AND a.alias = ?", (ref.name, ref.alias)).fetchone()
        elif ref.version is not None:
            row = db.execute("SELECT id FROM versions WHERE name = ? AND version = ?",
                             (ref.name, ref.version)).fetchone()
        else:
            row = db.execute("SELECT id FROM versions WHERE name = ? ORDER BY version DESC "
                             "LIMIT 1", (ref.name,)).fetchone()
        if row is None:
            known = db.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1",
                               (ref.name,)).fetchone()
            if not known:
                raise TailorError(f"no adapter named {ref.name!r} in {self.root}; `tailor "
                                  f"registry list` shows the names")
            raise TailorError(f"{ref} does not exist; `tailor registry list {ref.name}` shows its "
                              f"versions and aliases")
        return self._version(row["id"])

    def _version(self, version_id: int) -> Version:
        row = self.db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()
        parent = None
        if row["parent_id"] is not None:
            p = self.db.execute("SELECT name, version FROM versions WHERE id = ?",
                                (row["parent_id"],)).fetchone()
            parent = f"{p['name']}:{p['version']}"
        aliases = [r["alias"] for r in self.db.execute(
            "SELECT alias FROM aliases WHERE version_id = ? ORDER BY alias", (version_id,))]
        return Version(row["id"], row["name"], row["version"], row["manifest"], row["method"],
                       json.loads(row["card"]), json.loads(row["lineage"]), row["size"],
                       row["created"], parent, aliases)

    def files(self, ref: str | Version) -> list[tuple[str, str, int]]:
        v = ref if isinstance(ref, Version) else self.resolve(ref)
        return [(r["path"], r["sha256"], r["size"]) for r in self.db.execute(
            "SELECT path, sha256, size FROM files WHERE version_id = ? ORDER BY path", (v.id,))]

    def path(self, ref: str | Version) -> Path:
        """A folder holding the version's files (a read-only checkout, made once)."""
        v = ref if isinstance(ref, Version) else self.resolve(ref)
        return self.store.checkout(v.manifest, [(p, d) for p, d, _ in self.files(v)])

    def load(self, ref: str | Version):
        """The version's adapter, ready to bind to its base model."""
        from tailorlm.methods.artifact import load_adapter

        return load_adapter(self.path(ref))

    def data(self, ref: str | Version) -> dict:
        """{"train": Task, "test": Task}: the rows stored with the version (possibly none)."""
        from tailorlm.data.task import Example, Task

        v = ref if isinstance(ref, Version) else self.resolve(ref)
        out = {}
        for row in self.db.execute("SELECT role, sha256 FROM data WHERE version_id = ?", (v.id,)):
            blob = json.loads(self.store.read_bytes(row["sha256"]))
            examples = [Example(input=e["input"], target=e["target"], label=e["label"],
                                references=tuple(e["references"]), extra=e["extra"])
                        for e in blob["examples"]]
            out[row["role"]] = Task(examples=examples, **blob["task"])
        return out

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def versions(self, name: str | None = None) -> list[Version]:
        if name is not None:
            check_name(name)
        rows = self.db.execute("SELECT id FROM versions WHERE (? IS NULL OR name = ?) "
                               "ORDER BY name, version", (name, name)).fetchall()
        return [self._version(r["id"]) for r in rows]

    def history(self, name: str, alias: str | None = None) -> list[dict]:
        """Every alias move of `name` (of one alias), oldest first."""
        check_name(name)
        if alias is not None:
            check_alias(alias)
        rows = self.db.execute("SELECT * FROM alias_log WHERE name = ? AND (? IS NULL OR alias "
                               "= ?) ORDER BY id", (name, alias, alias)).fetchall()
        return [dict(r) for r in rows]

    def diff(self, a: str, b: str) -> list[tuple[str, object, object]]:
        """(key, value in a, value in b) for every lineage key that differs: config, data, base,
        metrics, costs, method, parent."""
        va, vb = self.resolve(a), self.resolve(b)
        fa, fb = flat(va.lineage), flat(vb.lineage)
        fa["method"], fb["method"] = va.method, vb.method
        return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
                if fa.get(k) != fb.get(k) and not k.startswith(REPEATED)]

    # -- upkeep ---------------------------------------------------------------------------------

    def verify(self) -> dict:
        """Check the index (PRAGMA integrity_check, foreign keys), every version's manifest, and
        every blob a version or its data names against its digest."""
        from tailorlm.registry.upkeep import verify

        return verify(self)

    def gc(self, *, wait: bool = False) -> dict:
        """Remove blobs no version names, unfinished writes and stale checkouts; refused while a
        write is in flight (unless `wait`)."""
        from tailorlm.registry.upkeep import gc

        return gc(self, wait=wait)

    def register_comparison(self, out: str | Path, name: str, *, alias: str = "candidate",
                            reason: str = "") -> Version:
        """The recommended adapter of the comparison in OUT, as the next version of NAME."""
        from tailorlm.registry.comparison import register_comparison

        return register_comparison(out, name, registry=self, alias=alias, reason=reason)

    def export(self, ref: str, dest: str | Path, *, merged: bool = False) -> Path:
        from tailorlm.registry.export import export

        return export(self, ref, dest, merged=merged)


def manifest_digest(files: list[tuple[str, str]]) -> str:
    listing = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _folder_files(folder: Path) -> list[str]:
    """The files an adapter folder holds, as relative paths: hidden entries (.work checkpoints,
    .tmp- leftovers) are not part of the adapter; links are refused."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_symlink():
            raise TailorError(f"{path} is a symbolic link; the registry stores only real files")
        if path.is_file():
            out.append(check_relpath(rel.as_posix()))
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{path} is not readable JSON ({e}); re-create the adapter") from None


def _version_number(version) -> int:
    text = str(version)
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise TailorError(f"version {text[:40]!r} is not a version number (1, 2, ...)")
    return int(text)
