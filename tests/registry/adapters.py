"""Small adapter folders for the registry tests, fitted on the tiny model in seconds."""

from __future__ import annotations

from pathlib import Path

from helpers import sentiment_task, tiny_backend
from tailorlm.methods import get_method
from tailorlm.methods.artifact import save_adapter

FAST = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "bf16": False, "template": "text_label"}
CONFIGS = {
    "prompt_template": {"template": "text_label", "calibrate": "off"},
    "lora": {**FAST, "r": 1},
    "soft_prompt": {**FAST, "n_virtual": 3},
    "prefix": {**FAST, "n_virtual": 3},
}


def card(backend, task, metrics=None, base_name: str = "tiny") -> dict:
    """A card in the one card format (methods/artifact.py)."""
    return {"base_model": {"name": base_name, "identity": backend.identity,
                           "sha256": backend.sha256, "variant": "random float32",
                           "dtype": "float32", "source": backend.path},
            "task": {"name": task.name, "kind": task.kind, "labels": task.labels,
                     "verbalizer": task.verbalizer, "description": task.description},
            "data": {"train_sha256": task.fingerprint(), "val_sha256": None, "test_sha256": None,
                     "n_train": len(task), "n_val": 0, "n_test": 0},
            "metrics": metrics or {}, "costs": {"fit_seconds": 0.1},
            "recipe": {"method": None, "config": {}, "seed": 0, "k": None, "plan": None}}


def fit_folder(method: str, folder: Path, backend=None, seed: int = 0, base_name: str = "tiny",
               task=None, **overrides) -> Path:
    backend = backend or tiny_backend()
    task = task or sentiment_task(4)
    spec = get_method(method)
    config = spec.config.from_dict({**CONFIGS[method], **overrides})
    adapter = spec.fit(backend, task, None, config, seed=seed,
                       work_dir=folder.parent / f".work-{folder.name}")
    c = card(backend, task, base_name=base_name)
    c["recipe"] = {"method": method, "config": config.to_dict(), "seed": seed, "k": None,
                   "plan": None}
    return save_adapter(adapter, folder, c)


def client_task(clients=("acme", "globex"), n_per_class=8):
    """The tiny sentiment task, each class's rows split in turn between the clients."""
    from tailorlm.data.task import Example

    base = sentiment_task(n_per_class)
    rows = [Example(e.input, e.target, e.label, extra={"client": clients[i % len(clients)]})
            for i, e in enumerate(base.examples)]
    return base.with_examples(rows)
