"""Append-only migrations, tested from a committed registry of the first schema (data/v1/, made by
data/make_v1.py) and from a blank one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tailorlm.registry import Registry
from tailorlm.registry.schema import MIGRATIONS, SCHEMA_VERSION

V1 = Path(__file__).parent / "data" / "v1"


def test_first_schema_is_migrated_and_keeps_everything(tmp_path, folders):
    root = tmp_path / "old"
    shutil.copytree(V1, root)
    with sqlite3.connect(root / "index.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    with Registry(root) as reg:
        assert reg.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reg.verify()["ok"]
        assert [v.ref for v in reg.versions("legacy")] == ["legacy:1", "legacy:2"]
        assert reg.resolve("legacy@production").ref == "legacy:2"
        assert reg.resolve("legacy:1").lineage["metrics"] == {"accuracy": 0.6}
        assert reg.load("legacy@production").method == "prompt_template"
        log = reg.history("legacy")
        assert [(e["from_version"], e["to_version"], e["reason"], e["undoes"]) for e in log] == [
            (None, 1, "first", None), (1, 2, "better", None)]
        assert reg.data("legacy:1") == {}  # the first schema kept no data rows
        assert reg.rollback("legacy", "production") == (2, 1)
        assert reg.push(folders["lora"], "legacy").ref == "legacy:3"
        assert reg.verify()["ok"]
    with Registry(root) as reg:  # opening again migrates nothing
        assert len(reg.history("legacy")) == 3


def test_blank_registry_gets_every_migration(tmp_path):
    with Registry(tmp_path / "new") as reg:
        assert reg.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in reg.db.execute("SELECT name FROM sqlite_master WHERE type = "
                                               "'table'")}
        assert {"versions", "files", "aliases", "alias_log", "data"} <= tables
        assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_what_is_written_once_cannot_be_changed(reg, folders):
    import pytest

    reg.push(folders["prompt_template"], "fixed", alias="production")
    for sql in ("UPDATE versions SET method = 'x'", "DELETE FROM versions",
                "UPDATE files SET sha256 = 'x'", "DELETE FROM files",
                "UPDATE alias_log SET to_version = 9", "DELETE FROM alias_log"):
        with pytest.raises(sqlite3.IntegrityError, match="immutable|append-only"):
            reg.db.execute(sql)
    assert reg.verify()["ok"]
