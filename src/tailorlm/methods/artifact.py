"""Adapter folders: what a fitted method leaves on disk, written atomically.

    <dir>/adapter.json   {"method", "config", "state"}: enough to rebuild the adapter
    <dir>/card.json      provenance: base model identity and hash, data hash, metrics, costs,
                         tailorlm version, creation time

Prompt methods hold only text, so `state` is all of them. Methods with weights write them beside
these in `adapter.save_files` (PEFT's format where one exists, safetensors always). The folder is
written aside (`.tmp-<name>-<pid>`), completed, then renamed into place, so a reader never sees
half an adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tailorlm import __version__
from tailorlm.errors import TailorError
from tailorlm.methods.index import get_method

ADAPTER_FILE = "adapter.json"
CARD_FILE = "card.json"


def save_adapter(adapter, directory: str | Path, card: dict, *, keep: tuple[str, ...] = ()) -> Path:
    """Write `adapter` as the folder `directory`, replacing any folder there.

    `keep` names entries of the folder being replaced that move into the new one (e.g. `.work`,
    the training checkpoints that `--resume` reads); everything else of the old folder goes.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # Files first: an adapter made of parts (a hybrid) records in its state what they weigh.
    adapter.save_files(tmp)
    payload = {"method": adapter.method, "config": adapter.config.to_dict(),
               "state": adapter.state()}
    full_card = {"method": adapter.method, "tailorlm_version": __version__,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **card}
    for name, obj in ((ADAPTER_FILE, payload), (CARD_FILE, full_card)):
        write_json(tmp / name, obj)
    for name in keep:
        if (directory / name).exists():
            os.replace(directory / name, tmp / name)
    if directory.exists():  # replace: move the old one aside first so there is never a gap
        old = directory.parent / f".old-{directory.name}-{os.getpid()}"
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def update_adapter(adapter, directory: str | Path, card_updates: dict) -> None:
    """Rewrite the adapter.json of a saved folder from `adapter`, and merge `card_updates` into
    its card.json, each written aside and renamed: for adapters that grow in place (a hybrid's
    new variant), whose other files stay as they are."""
    directory = Path(directory)
    update_card(directory, card_updates)
    payload = {"method": adapter.method, "config": adapter.config.to_dict(),
               "state": adapter.state()}
    write_json_atomic(directory / ADAPTER_FILE, payload)  # the commit point


def update_card(directory: str | Path, updates: dict) -> dict:
    """Merge `updates` into a saved folder's card.json (top-level keys), atomically."""
    card = {**load_card(directory), **updates}
    write_json_atomic(Path(directory) / CARD_FILE, card)
    return card


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    write_json(tmp, obj)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())


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
