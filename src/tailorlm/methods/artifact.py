"""Adapter folders: what a fitted method leaves on disk, written atomically.

    <dir>/adapter.json   {"method", "config", "state"}: enough to rebuild the adapter
    <dir>/card.json      provenance: base model identity and hash, data hash, metrics, costs,
                         tailorlm version, creation time

Prompt methods hold only text, so `state` is all of them. Methods with weights write them beside
these in `adapter.save_files` (PEFT's format where one exists, safetensors always). The folder is written aside (`.tmp-<name>-<pid>`), completed, then
renamed into place, so a reader never sees half an adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tailorlm import __version__
from tailorlm.errors import TailorError
from tailorlm.methods.registry import get_method

ADAPTER_FILE = "adapter.json"
CARD_FILE = "card.json"


def save_adapter(adapter, directory: str | Path, card: dict) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    payload = {"method": adapter.method, "config": adapter.config.to_dict(),
               "state": adapter.state()}
    full_card = {"method": adapter.method, "tailorlm_version": __version__,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **card}
    adapter.save_files(tmp)
    for name, obj in ((ADAPTER_FILE, payload), (CARD_FILE, full_card)):
        with open(tmp / name, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
    if directory.exists():  # replace: move the old one aside first so there is never a gap
        old = directory.parent / f".old-{directory.name}-{os.getpid()}"
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def load_adapter(directory: str | Path):
    path = Path(directory) / ADAPTER_FILE
    if not path.is_file():
        raise TailorError(f"{directory} is not a tailorlm adapter folder (no {ADAPTER_FILE})")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        spec = get_method(payload["method"])
        return spec.from_state(spec.config.from_dict(payload["config"]), payload["state"],
                               Path(directory))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TailorError(f"{path} is damaged ({e}); re-create the adapter") from None


def load_card(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CARD_FILE).read_text(encoding="utf-8"))
