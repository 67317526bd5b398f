"""Adapter folders: what a fitted method leaves on disk, written atomically.

    <dir>/adapter.json   {"method", "config", "state"}: enough to rebuild the adapter
    <dir>/card.json      the one card (`build_card`, format_version 1), whoever writes the folder:

    {"format_version": 1, "method", "config",          the resolved config
     "task": {"name", "kind", "labels", "verbalizer", "description"},
     "base_model": {"name", "identity", "sha256", "variant", "dtype", "source"},
     "data": {"train_sha256", "val_sha256", "test_sha256", "n_train", "n_val", "n_test"},
     "metrics": {...}, "costs": {...},                   {} when not measured
     "recipe": {"method", "config", "seed", "k", "plan"},  enough to run it again
     "serving": {"max_lora_rank": 8},                    only where serving needs something
     "tailorlm_version", "created"}

An adapter made of parts (a hybrid) saves each part as an adapter folder of its own inside its
folder; each part's card is the whole's provenance (task, base model, data, recipe) with the
part's own method, config and serving, and `part_of` / `part` naming what it belongs to, so every
part opens on its own (`tailor eval --adapter <dir>/weight`). Readers take what they need from a
card and require nothing beyond these keys (`card_base_model` reads older cards too).

Prompt methods hold only text, so `state` is all of them. Methods with weights write them beside
these in `adapter.save_files` (PEFT's format where one exists, safetensors always). The folder is
written aside (`.tmp-<name>-<pid>`), completed, then renamed into place, so a reader never sees
half an adapter.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import time
from pathlib import Path

from tailorlm import __version__
from tailorlm.errors import TailorError
from tailorlm.methods.contract import serving_of
from tailorlm.methods.index import get_method

ADAPTER_FILE = "adapter.json"
CARD_FILE = "card.json"
FORMAT_VERSION = 1
PROVENANCE = ("task", "base_model", "data", "recipe")  # what a part inherits from its whole
# The card of the adapter whose files are being saved: its parts' cards are made from it.
_WHOLE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("whole_card", default=None)


def build_card(adapter, backend, task, *, train=None, val=None, test=None, metrics=None,
               costs=None, seed: int | None = None, k: int | None = None,
               plan: dict | None = None, model: str | None = None) -> dict:
    """The card of `adapter`, fitted on `backend` for `task` (its labels and words), from the
    data it saw (`train`, `val`) and was scored on (`test`); `model` is the base model as the user
    named it (default: the backend's name, a folder made absolute so it is found from anywhere)."""
    config = adapter.config.to_dict()
    card = {
        "format_version": FORMAT_VERSION,
        "method": adapter.method,
        "config": config,
        "task": {"name": task.name, "kind": task.kind, "labels": task.labels,
                 "verbalizer": task.verbalizer, "description": task.description},
        "base_model": {"name": _model_name(model or backend.name), "identity": backend.identity,
                       "sha256": backend.sha256, "variant": backend.variant,
                       "dtype": str(backend.dtype).removeprefix("torch."),
                       "source": backend.path},
        "data": {f"{part}_sha256": rows.fingerprint() if rows is not None else None
                 for part, rows in (("train", train), ("val", val), ("test", test))},
        "metrics": dict(metrics or {}),
        "costs": dict(costs or {}),
        "recipe": {"method": adapter.method, "config": config, "seed": seed, "k": k,
                   "plan": plan},
    }
    card["data"].update({f"n_{part}": len(rows) if rows is not None else 0
                         for part, rows in (("train", train), ("val", val), ("test", test))})
    return card


def card_base_model(card: dict) -> dict:
    """The card's base_model entry ({"name", "identity", "sha256", ...}); cards written before
    format_version 1 kept them as top-level keys, and are read too."""
    base = card.get("base_model")
    if isinstance(base, dict):
        return base
    return {"name": card.get("model"), "identity": base, "sha256": card.get("base_model_sha256"),
            "dtype": card.get("dtype"), "source": card.get("base_model_source"), "variant": None}


def part_card(whole: dict, part_of: str, part: str) -> dict:
    """What a part's card takes from its whole's card: its provenance, and what it is part of."""
    return {**{key: whole[key] for key in PROVENANCE if key in whole},
            "metrics": {}, "costs": {}, "part_of": part_of, "part": part}


def _model_name(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def save_adapter(adapter, directory: str | Path, card: dict, *, keep: tuple[str, ...] = ()) -> Path:
    """Write `adapter` as the folder `directory`, replacing any folder there, with `card` (from
    `build_card`); the method, config, serving needs, version and time are filled in from the
    adapter, and the cards of its parts (if it has any) get its provenance.

    `keep` names entries of the folder being replaced that move into the new one (e.g. `.work`,
    the training checkpoints that `--resume` reads); everything else of the old folder goes.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    whole = _WHOLE.get()
    if whole is not None and "part_of" in card:  # a part saved while its whole is: inherit
        card = {**part_card(whole, card["part_of"], card["part"]), **card}
    full_card = {"format_version": FORMAT_VERSION, "method": adapter.method,
                 "config": adapter.config.to_dict(), **card}
    serving = serving_of(adapter)
    if serving:
        full_card["serving"] = serving
    full_card.update(tailorlm_version=__version__,
                     created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # Files first: an adapter made of parts (a hybrid) saves them here, each with its card made
    # from this one, and records in its state what they weigh.
    token = _WHOLE.set(full_card)
    try:
        adapter.save_files(tmp)
    finally:
        _WHOLE.reset(token)
    payload = {"method": adapter.method, "config": adapter.config.to_dict(),
               "state": adapter.state()}
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
