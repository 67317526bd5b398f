"""A writer killed at random points while readers load: the registry is whole afterwards.

One writer process pushes versions (each with a random payload of up to half a megabyte, so a kill
often lands inside a blob write) and moves and rolls back aliases in a loop; it is SIGKILLed
at 22 random points, each time restarted. Four reader processes meanwhile resolve
fault@production, check every file of its checkout against the index's digests, and load the
adapter. Afterwards: `verify` passes, every version holds all its files, every alias resolves to
a complete version, and no reader ever met a version that was not whole.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from registry.fault_worker import reader
from tailorlm.methods.artifact import load_adapter
from tailorlm.registry import Registry

WORKER = Path(__file__).with_name("fault_worker.py")
KILLS = 22


def spawn(*args, stderr: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with open(stderr, "w") as err:  # a file, not a pipe: a full pipe would block the worker
        return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)


def test_writer_killed_at_random_points(folders, tmp_path):
    root, stop = tmp_path / "registry", tmp_path / "stop"
    Registry(root).close()
    # readers are forked from this process, which has imported torch already: they start at once
    fork = multiprocessing.get_context("fork")
    readers = [fork.Process(target=reader, args=(root, tmp_path / f"reader{i}.json", stop))
               for i in range(4)]
    for r in readers:
        r.start()
    rng = random.Random(0)
    killed_mid_write = 0
    try:
        for i in range(KILLS):
            err = tmp_path / f"writer{i}.err"
            writer = spawn("writer", root, folders["lora"], i, stderr=err)
            assert writer.stdout.readline().strip() == "ready", err.read_text()
            left = set((root / "tmp").iterdir())  # by writers killed before
            time.sleep(rng.uniform(0.05, 0.6))
            killed_mid_write += bool(set((root / "tmp").iterdir()) - left)  # a blob half-written
            writer.send_signal(signal.SIGKILL)
            assert writer.wait() == -signal.SIGKILL, err.read_text()  # it was still running
    finally:
        stop.touch()
        for r in readers:
            r.join(timeout=120)
            assert r.exitcode == 0
    logs = [json.loads((tmp_path / f"reader{i}.json").read_text()) for i in range(4)]

    with Registry(root) as reg:
        report = reg.verify()
        assert report["ok"], report["problems"]
        versions = reg.versions("fault")
        assert len(versions) >= 10
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))
        expected = {"adapter.json", "adapter_config.json", "adapter_model.safetensors",
                    "card.json", "payload.safetensors"}
        for v in versions:  # no version is partial
            assert {p for p, _, _ in reg.files(v)} == expected
            assert load_adapter(reg.path(v)).method == "lora"
        for alias in ("production", "staging"):  # every alias names a complete version
            v = reg.resolve(f"fault@{alias}")
            assert {p for p, _, _ in reg.files(v)} == expected
        assert reg.gc()["blobs_removed"] >= 0 and reg.verify()["ok"]
    assert all(not log["problems"] for log in logs), [log["problems"] for log in logs]
    assert all(log["seen"] for log in logs)  # every reader loaded versions while the writer ran
    print(f"{len(versions)} versions, {KILLS} kills ({killed_mid_write} with a blob write "
          f"in flight), readers saw {[len(log['seen']) for log in logs]} versions")
