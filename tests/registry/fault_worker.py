"""The two programs of the registry's fault test (test_fault.py).

    python fault_worker.py writer ROOT TEMPLATE SEED   push versions and move aliases in a loop
                                                       until killed (no torch: starts at once)
    reader(ROOT, LOG, STOP)                            forked by the test (torch already
                                                       imported): resolve fault@production and
                                                       load its adapter until STOP exists; the
                                                       versions it saw, or any problem, to LOG
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

NAME, ALIASES = "fault", ("production", "staging")
PAYLOAD = "payload.safetensors"  # random bytes per version: a write long enough to be cut


def writer(root: Path, template: Path, seed: int) -> None:
    from tailorlm.errors import TailorError
    from tailorlm.registry import Registry  # no torch: a writer starts in a fraction of a second

    rng = random.Random(seed)
    reg = Registry(root)
    work = root.parent / f"writer-{os.getpid()}"
    print("ready", flush=True)
    while True:
        op = rng.random()
        versions = [v.version for v in reg.versions(NAME)]
        try:
            if op < 0.5 or not versions:
                folder = work / f"v{rng.getrandbits(32)}"
                shutil.copytree(template, folder)
                card = json.loads((folder / "card.json").read_text())
                (folder / "card.json").write_text(json.dumps({**card, "note": rng.getrandbits(64)}))
                (folder / PAYLOAD).write_bytes(rng.randbytes(rng.randrange(1, 512) * 1024))
                reg.push(folder, NAME, alias=rng.choice(ALIASES), reason="fault test")
                shutil.rmtree(folder)
            elif op < 0.85:
                alias = rng.choice(ALIASES)
                current = next((v.version for v in reg.versions(NAME) if alias in v.aliases), None)
                reg.alias(NAME, alias, rng.choice(versions), expect=current)
            else:
                reg.rollback(NAME, rng.choice(ALIASES))
        except TailorError:  # nothing to roll back yet
            pass


def reader(root: Path, log: Path, stop: Path) -> None:
    from tailorlm.errors import TailorError
    from tailorlm.methods.artifact import load_adapter
    from tailorlm.registry import Registry

    reg = Registry(root)
    seen, problems = set(), []
    while not stop.exists():
        time.sleep(0.005)  # four readers on two cores: leave the writer some time
        try:
            version = reg.resolve(f"{NAME}@production")
        except TailorError:  # no version yet
            time.sleep(0.01)
            continue
        try:
            folder = reg.path(version)
            files = reg.files(version)
            on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            if on_disk != sorted(p for p, _, _ in files):
                problems.append(f"{version.ref}: files {on_disk}")
            for rel, digest, size in files:
                data = (folder / rel).read_bytes()
                if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                    problems.append(f"{version.ref}: {rel} is not whole")
            if load_adapter(folder).method != "lora":
                problems.append(f"{version.ref}: loaded as another method")
            seen.add(version.version)
        except Exception as e:  # any failure to read a committed version is the bug sought
            problems.append(f"{version.ref}: {type(e).__name__}: {e}")
    log.write_text(json.dumps({"seen": sorted(seen), "problems": problems}))


if __name__ == "__main__":
    args = sys.argv[2:]  # argv[1] == "writer"
    writer(Path(args[0]), Path(args[1]), int(args[2]))
