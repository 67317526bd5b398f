"""Serving a saved adapter never imports training code (shared/DESIGN.md).

Each learning kind is fitted here (tiny model, one short epoch) and saved; a fresh Python process
then imports `tailorlm.methods`, loads every adapter, binds it and scores the task's labels, and
says which training modules it imported: none. Its scores equal the fitted adapters' own here,
so the load really is the adapter that was trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import sentiment_task, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.methods import get_method
from tailorlm.methods.artifact import save_adapter

TRAINING = ("tailorlm.engine.train", "tailorlm.methods.trainable")
FAST = {"epochs": 1, "batch_size": 4, "bf16": False, "template": "text_label"}
KINDS = {"lora": {**FAST, "lr": 1e-2, "r": 2},
         "soft_prompt": {**FAST, "n_virtual": 3},
         "prefix": {**FAST, "n_virtual": 3},
         "full": {**FAST, "lr": 1e-3},
         "lora+soft_prompt": {**FAST, "input": {"n_virtual": 3}}}

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # tests/, for the same tiny backend
import tailorlm.methods  # noqa: F401
from helpers import sentiment_task, tiny_backend
from tailorlm.engine.evaluate import label_scores
from tailorlm.methods.artifact import load_adapter

backend, task = tiny_backend(), sentiment_task(2)
scores = {}
for name, folder in json.loads(sys.argv[2]).items():
    adapter = load_adapter(folder)
    adapter.bind(backend)
    scores[name] = label_scores(backend, adapter, task).tolist()
print(json.dumps({"scores": scores,
                  "imported": [m for m in %r if m in sys.modules]}))
""" % (TRAINING,)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{kind: (folder, label scores of the fitted adapter)} for every learning kind."""
    root = tmp_path_factory.mktemp("saved")
    backend, task = tiny_backend(), sentiment_task(4)
    out = {}
    for name, options in KINDS.items():
        spec = get_method(name)
        adapter = spec.fit(backend, task, None, spec.config.from_dict(options), seed=0,
                           work_dir=tmp_path_factory.mktemp(name.replace("+", "_")))
        folder = save_adapter(adapter, root / name.replace("+", "_"),
                              {"base_model": backend.identity, "base_model_sha256": backend.sha256})
        out[name] = (Path(folder), label_scores(backend, adapter, sentiment_task(2)))
    return out


def test_loading_and_binding_every_kind_imports_no_training_code(saved):
    tests = Path(__file__).resolve().parents[1]
    folders = {name: str(folder) for name, (folder, _) in saved.items()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tests), json.dumps(folders)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    assert set(result["scores"]) == set(KINDS)
    for name, (_, fitted) in saved.items():
        np.testing.assert_allclose(result["scores"][name], fitted, atol=1e-5, err_msg=name)

