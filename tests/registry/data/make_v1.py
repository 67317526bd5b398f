"""How tests/registry/data/v1/ was made: a registry written by the FIRST schema (migration 1 only),
with its own SQL, as tailorlm 0.1.0's registry wrote it. Kept to re-make it; test_migrations.py
opens a copy with the current code. Run: python make_v1.py ADAPTER_FOLDER (a prompt_template).
"""

import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[3] / "src"))
from tailorlm.registry.schema import MIGRATIONS  # noqa: E402

here = Path(__file__).parent / "v1"
shutil.rmtree(here, ignore_errors=True)
(here / "blobs").mkdir(parents=True)
db = sqlite3.connect(here / "index.sqlite")
db.executescript(MIGRATIONS[0])
db.execute("PRAGMA user_version = 1")
source = Path(sys.argv[1])
for number in (1, 2):
    files = []
    for name in ("adapter.json", "card.json"):
        data = (source / name).read_bytes()
        if name == "card.json":
            data = json.dumps({**json.loads(data), "metrics": {"accuracy": 0.5 + number / 10}},
                              indent=2).encode()
        digest = hashlib.sha256(data).hexdigest()
        (here / "blobs" / digest[:2]).mkdir(exist_ok=True)
        (here / "blobs" / digest[:2] / digest).write_bytes(data)
        files.append((name, digest, len(data)))
    listing = "".join(f"{d}  {p}\n" for p, d, _ in sorted(files))
    manifest = hashlib.sha256(listing.encode()).hexdigest()
    card = json.loads((here / "blobs" / files[1][1][:2] / files[1][1]).read_text())
    lineage = {"base": {"name": "tiny"}, "data": {}, "recipe": {"method": "prompt_template"},
               "comparison": None, "metrics": card["metrics"], "costs": {}, "parent": None}
    vid = db.execute("INSERT INTO versions (name, version, manifest, method, card, lineage, "
                     "parent_id, size, created) VALUES ('legacy', ?, ?, 'prompt_template', ?, ?, "
                     "NULL, ?, '2026-11-01T00:00:00Z')",
                     (number, manifest, json.dumps(card), json.dumps(lineage),
                      sum(s for _, _, s in files))).lastrowid
    db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", [(vid, p, d, s) for p, d, s in files])
db.execute("INSERT INTO aliases VALUES ('legacy', 'production', 2)")
db.executemany("INSERT INTO alias_log (name, alias, from_version, to_version, time, user, reason)"
               " VALUES ('legacy', 'production', ?, ?, '2026-11-01T00:00:00Z', 'ops', ?)",
               [(None, 1, "first"), (1, 2, "better")])
db.commit()
db.close()
