"""`verify` and `gc`: checking the store end to end, and removing what no version needs.

verify reads every blob a version names and hashes it; it reports problems, it repairs nothing:

    index       PRAGMA integrity_check and foreign_key_check
    versions    each version's files hash, listed, to the manifest digest it was stored under;
                every version has its adapter.json; every alias names a version
    blobs       every file and data blob is present and hashes to its name

Blobs no version names (a push killed before its transaction committed) are counted, not a
problem: `gc` removes them. gc takes the write lock exclusively, so it never runs while a push
or an alias move is in flight: a blob being written for a version not yet committed would look
unreferenced.
"""

from __future__ import annotations

import fcntl
import shutil
import time

from tailorlm.errors import TailorError
from tailorlm.registry.store import remove_tree

STALE_SECONDS = 3600  # checkouts half-made by a reader that died: removed once this old


def verify(reg) -> dict:
    from tailorlm.registry.registry import manifest_digest

    db, problems = reg.db, []
    integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        problems += [f"index: {line}" for line in integrity]
    for row in db.execute("PRAGMA foreign_key_check"):
        problems.append(f"index: table {row[0]} row {row[1]} names a missing {row[2]} row")
    versions = db.execute("SELECT id, name, version, manifest FROM versions").fetchall()
    for v in versions:
        files = db.execute("SELECT path, sha256 FROM files WHERE version_id = ?",
                           (v["id"],)).fetchall()
        ref = f"{v['name']}:{v['version']}"
        if manifest_digest([(f["path"], f["sha256"]) for f in files]) != v["manifest"]:
            problems.append(f"{ref}: its file list does not match its manifest (partial version)")
        if "adapter.json" not in {f["path"] for f in files}:
            problems.append(f"{ref}: no adapter.json")
    digests = {r[0]: r[1] for r in db.execute(
        "SELECT sha256, MIN(path) FROM files GROUP BY sha256")}
    digests.update({r[0]: f"data ({r[1]})" for r in db.execute(
        "SELECT sha256, role FROM data")})
    checked = 0
    for digest, what in sorted(digests.items()):
        actual = reg.store.hash_of(digest)
        if actual is None:
            problems.append(f"blob {digest[:12]} ({what}) is missing")
        elif actual != digest:
            problems.append(f"blob {digest[:12]} ({what}) is damaged: its bytes hash to "
                            f"{actual[:12]}")
        else:
            checked += 1
    dangling = db.execute("SELECT a.name, a.alias FROM aliases a LEFT JOIN versions v ON "
                          "v.id = a.version_id WHERE v.id IS NULL").fetchall()
    problems += [f"{r['name']}@{r['alias']} points at no version" for r in dangling]
    unreferenced = reg.store.all_digests() - set(digests)
    return {"ok": not problems, "problems": problems, "versions": len(versions),
            "blobs_checked": checked, "unreferenced_blobs": len(unreferenced)}


def gc(reg, *, wait: bool = False) -> dict:
    with open(reg.root / "write.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise TailorError("a write to the registry is in flight (a push or an alias move); "
                              "run gc again when it has finished") from None
        try:
            return _collect(reg)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _collect(reg) -> dict:
    db, store = reg.db, reg.store
    used = {r[0] for r in db.execute("SELECT sha256 FROM files UNION SELECT sha256 FROM data")}
    manifests = {r[0] for r in db.execute("SELECT manifest FROM versions")}
    removed, freed = 0, 0
    for digest in store.all_digests() - used:
        path = store.path(digest)
        freed += path.stat().st_size
        path.unlink()
        removed += 1
    leftovers = 0
    for path in store.tmp.iterdir():  # writes that never finished: no writer holds the lock now
        freed += path.stat().st_size if path.is_file() else 0
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        leftovers += 1
    checkouts = 0
    for path in store.checkouts.iterdir():
        stale = path.name.startswith(".tmp-") and time.time() - path.stat().st_mtime > \
            STALE_SECONDS
        if stale or (not path.name.startswith(".") and path.name not in manifests):
            remove_tree(path)
            checkouts += 1
    return {"blobs_removed": removed, "bytes_freed": freed, "unfinished_writes": leftovers,
            "checkouts_removed": checkouts}
