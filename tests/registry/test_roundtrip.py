"""compare --register, alias production, export: PEFT loads what the registry exports, and its
scores equal tailorlm's.

A tiny comparison (LoRA, soft prompt, prefix on the tiny model) registers its recommendation as
router:1 @candidate; the other two runs' folders are pushed from OUT/adapters (their lineage comes
from the comparison too). Each version is exported, loaded by PEFT on the base model, and its
logits and label log-likelihoods compared with tailorlm's own binding of the registry's version.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from helpers import write_jsonl
from peft_reference import peft_label_scores
from tailorlm.cli.main import main
from tailorlm.engine.evaluate import label_scores
from tailorlm.registry import Registry

METHODS = ("lora", "soft_prompt", "prefix")


@pytest.fixture(scope="module")
def compared(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roundtrip")
    pos = ["a great film", "I loved it", "wonderful and fun", "the best movie"]
    neg = ["a bad film", "I hated it", "boring and dull", "the worst movie"]
    rows = [{"text": t, "label": "positive"} for t in pos] + \
        [{"text": t, "label": "negative"} for t in neg]
    train, test = write_jsonl(tmp / "train.jsonl", rows), write_jsonl(tmp / "test.jsonl", rows)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAILORLM_HOME", str(tmp / "home"))
        mp.setenv("TAILORLM_REGISTRY", str(tmp / "registry"))
        code = main(["compare", "--train", str(train), "--test", str(test), "--model",
                     str(tiny_model_dir), "--methods", ",".join(METHODS), "--k", "2", "--seed",
                     "0", "--curve", "none", "train.epochs=1", "train.batch_size=4",
                     "eval.sensitivity=0", "--set", "soft_prompt.n_virtual=2",
                     "--set", "prefix.n_virtual=2", "--out", str(tmp / "run"),
                     "--register", "router"])
        assert code == 0
    return tmp


@pytest.fixture
def reg(compared, monkeypatch):
    monkeypatch.setenv("TAILORLM_REGISTRY", str(compared / "registry"))
    with Registry() as r:
        yield r


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from tailorlm.models import load_backend

    return load_backend(str(tiny_model_dir))


def test_compare_register_records_the_recommendation(compared, reg, tiny_model_dir, capsys):
    summary = json.loads((compared / "run" / "report.json").read_text())
    v = reg.resolve("router@candidate")
    assert v.ref == "router:1" and v.method == summary["recommendation"]["method"]
    c = v.lineage["comparison"]
    assert c["recommended"] is True and c["out"] == str((compared / "run").resolve())
    row = next(json.loads(x) for x in (compared / "run" / "results.jsonl").read_text().split("\n")
               if x and json.loads(x)["method"] == v.method)
    assert c["run_key"] == row["run_key"] and v.lineage["metrics"]["accuracy"] == row["score"]
    assert v.lineage["costs"]["fit_seconds"] == row["fit_seconds"]
    assert v.lineage["base"]["name"] == str(tiny_model_dir)
    assert v.lineage["recipe"]["k"] == 2 and v.lineage["recipe"]["seed"] == 0
    assert v.lineage["recipe"]["plan"]["resolved"]["k"] == 2
    kept = reg.data(v)  # the rows it was fitted on, found by their hash
    assert kept["train"].fingerprint() == v.lineage["data"]["train_sha256"]
    assert len(kept["train"]) == 4 and len(kept["test"]) == 8
    assert reg.history("router", "candidate")[0]["reason"].startswith("recommended by")


def test_alias_production_then_export_loads_in_peft(compared, reg, backend, tmp_path):
    assert main(["registry", "alias", "router", "production", "1", "--reason", "ship"]) == 0
    for folder in sorted((compared / "run" / "adapters").iterdir()):
        assert main(["registry", "push", str(folder), "--name", "router"]) == 0
    versions = {v.method: v for v in reg.versions("router")}
    assert set(versions) == set(METHODS) and len(reg.versions("router")) == 3
    assert reg.resolve("router@production").aliases == ["candidate", "production"]
    for method, v in versions.items():
        assert v.lineage["comparison"]["method"] == method  # pushed from OUT: same lineage
        dest = tmp_path / method
        assert main(["registry", "export", v.ref, str(dest)]) == 0
        assert {"adapter_config.json", "adapter_model.safetensors", "registry.json"} <= {
            p.name for p in dest.iterdir()}
        adapter = reg.load(v)
        task = reg.data(v)["test"]
        prompts = [adapter.prompt(e) for e in task.examples]
        ours = label_scores(backend, adapter, task)
        theirs = peft_label_scores(backend, dest, prompts, adapter.continuations(task))
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
        if method == "lora":  # and the logits themselves, position by position
            from peft import PeftModel

            ids = torch.tensor([backend.encode("the cat sat on the mat")])
            peft_model = PeftModel.from_pretrained(copy.deepcopy(backend.model), str(dest))
            with torch.no_grad():
                np.testing.assert_allclose(adapter.bind(backend).model(ids).logits.numpy(),
                                           peft_model(ids).logits.numpy(), atol=1e-5, rtol=0)


def test_export_merged_lora_is_a_transformers_model(reg, backend, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    v = next(v for v in reg.versions("router") if v.method == "lora")
    plain, merged = tmp_path / "plain", tmp_path / "merged"
    reg.export(v.ref, plain)
    reg.export(v.ref, merged, merged=True)
    assert not (merged / "adapter_config.json").exists() and (merged / "config.json").is_file()
    ids = torch.tensor([backend.encode("a dog ran in the park")])
    with torch.no_grad():
        want = PeftModel.from_pretrained(copy.deepcopy(backend.model), str(plain))(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
    assert json.loads((merged / "registry.json").read_text())["merged"] is True
