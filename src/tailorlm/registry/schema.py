"""The index's tables, and the migrations that made them: append-only, one per schema version.

`PRAGMA user_version` holds the schema version. Opening an index runs the migrations it lacks, in
order, each in one transaction with the version bump, so a crash mid-migration leaves the old
version. A migration is never edited once released: a change is a new entry at the end (and a
committed database of the first schema, tests/registry/data/, checks the whole chain).

    versions   one row per version: immutable once inserted (name, version) -> manifest, card,
               lineage; `manifest` is the sha256 of the sorted file list
    files      (version, path) -> blob sha256 and size: what the version's folder holds
    aliases    (name, alias) -> version: where an alias points now
    alias_log  every alias move, appended: from, to, when, who, why, and which move a rollback undid
    data       (v2) (version, role) -> the rows it was fitted ("train") or evaluated ("test") on,
               as a blob, and their Task.fingerprint()
    (v3)       triggers: versions, files, data and the alias log refuse UPDATE and DELETE
"""

from __future__ import annotations

import sqlite3

from tailorlm.errors import TailorError

MIGRATIONS: list[str] = [
    # 1: versions, their files, aliases and the alias log
    """
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        manifest TEXT NOT NULL,
        method TEXT NOT NULL,
        card TEXT NOT NULL,
        lineage TEXT NOT NULL,
        parent_id INTEGER REFERENCES versions(id),
        size INTEGER NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (name, version)
    );
    CREATE INDEX versions_manifest ON versions (name, manifest);
    CREATE TABLE files (
        version_id INTEGER NOT NULL REFERENCES versions(id),
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (version_id, path)
    );
    CREATE INDEX files_sha256 ON files (sha256);
    CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version_id INTEGER NOT NULL REFERENCES versions(id),
        PRIMARY KEY (name, alias)
    );
    CREATE TABLE alias_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        from_version INTEGER,
        to_version INTEGER NOT NULL,
        time TEXT NOT NULL,
        user TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alias_log_name ON alias_log (name, alias, id);
    """,
    # 2: the data a version was fitted and evaluated on (upgrade re-runs it); rollbacks in the log
    """
    CREATE TABLE data (
        version_id INTEGER NOT NULL REFERENCES versions(id),
        role TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (version_id, role)
    );
    CREATE INDEX data_sha256 ON data (sha256);
    ALTER TABLE alias_log ADD COLUMN undoes INTEGER;
    """,
    # 3: what is written once stays: versions, their files and data, and the alias log refuse
    # UPDATE and DELETE (only `aliases`, the pointers, change)
    """
    CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER versions_kept BEFORE DELETE ON versions
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER files_immutable BEFORE UPDATE ON files
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER files_kept BEFORE DELETE ON files
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER data_immutable BEFORE UPDATE ON data
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER data_kept BEFORE DELETE ON data
        BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
    CREATE TRIGGER alias_log_append_only BEFORE UPDATE ON alias_log
        BEGIN SELECT RAISE(ABORT, 'the alias log is append-only'); END;
    CREATE TRIGGER alias_log_kept BEFORE DELETE ON alias_log
        BEGIN SELECT RAISE(ABORT, 'the alias log is append-only'); END;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def connect(path) -> sqlite3.Connection:
    """An index connection: WAL (readers never wait for the writer), full sync, foreign keys, and
    autocommit so that every write says where its transaction begins (`BEGIN IMMEDIATE`)."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def statements(script: str) -> list[str]:
    """A script's statements, one by one (a trigger's body holds ';' too): executescript would
    commit the migration's transaction before running it."""
    out, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                out.append(buffer.strip())
            buffer = ""
    return out


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the index to SCHEMA_VERSION; returns the version it had."""
    was = conn.execute("PRAGMA user_version").fetchone()[0]
    if was > SCHEMA_VERSION:
        raise TailorError(f"this registry has schema version {was}, newer than this tailorlm "
                          f"knows ({SCHEMA_VERSION}): upgrade tailorlm (pip install -U tailorlm)")
    for number in range(was, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-read under the write lock: another process may have migrated meanwhile
            if conn.execute("PRAGMA user_version").fetchone()[0] != number:
                conn.execute("ROLLBACK")
                continue
            for statement in statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return was
