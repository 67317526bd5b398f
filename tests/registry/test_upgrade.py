"""`upgrade`: a version's recipe re-fitted on another base, old and new scored on the same rows,
the new version registered with its parent, no alias moved unless asked."""

from __future__ import annotations

import json

import pytest

from helpers import sentiment_task, write_jsonl
from registry.adapters import fit_folder
from tailorlm.cli.main import main
from tailorlm.compare.upgrade import upgrade
from tailorlm.engine.evaluate import evaluate
from tailorlm.errors import TailorError


@pytest.fixture(scope="module")
def bases(tiny_model_dir, tmp_path_factory):
    """The tiny model, and another one (other random weights, same tokenizer): the new base."""
    from transformers import AutoTokenizer

    from conftest import build_tiny_llama

    new = tmp_path_factory.mktemp("new_base")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    build_tiny_llama(len(tokenizer), seed=1).save_pretrained(new)
    tokenizer.save_pretrained(new)
    return str(tiny_model_dir), str(new)


@pytest.fixture(scope="module")
def fitted(bases, tmp_path_factory):
    from tailorlm.models import load_backend

    old = load_backend(bases[0])
    root = tmp_path_factory.mktemp("up")
    return {m: fit_folder(m, root / m, backend=old, base_name=bases[0])
            for m in ("prompt_template", "lora")}


def test_upgrade_every_aliased_version(reg, bases, fitted, tmp_path):
    from tailorlm.models import load_backend

    task = sentiment_task(4)
    reg.push(fitted["lora"], "up", alias="production", data={"train": task, "test": task})
    reg.push(fitted["prompt_template"], "up", alias="staging",
             data={"train": task, "test": task})
    report = upgrade("up", bases[1], registry=reg, all_aliases=True, out=tmp_path / "u",
                     on_note=lambda line: None)
    rows = {r["method"]: r for r in report["versions"]}
    assert rows["lora"]["from"] == "up:1" and rows["prompt_template"]["from"] == "up:2"
    assert {rows["lora"]["to"], rows["prompt_template"]["to"]} == {"up:3", "up:4"}
    old = evaluate(load_backend(bases[0]), reg.load("up:1"), task)
    assert rows["lora"]["score_before"] == pytest.approx(old.score)
    new = reg.resolve(rows["lora"]["to"])
    assert new.parent == "up:1" and new.method == "lora" and new.aliases == []
    assert new.lineage["base"]["name"] == bases[1]
    assert new.lineage["base"]["sha256"] != reg.resolve("up:1").lineage["base"]["sha256"]
    assert new.lineage["recipe"]["config"] == reg.resolve("up:1").lineage["recipe"]["config"]
    assert new.lineage["metrics"]["accuracy"] == pytest.approx(rows["lora"]["score_after"])
    after = evaluate(load_backend(bases[1]), reg.load(new), task)
    assert after.score == pytest.approx(rows["lora"]["score_after"])
    assert reg.data(new)["test"].fingerprint() == task.fingerprint()
    assert reg.resolve("up@production").ref == "up:1"  # no alias moved
    assert set(report["carry_over"]) == {"input", "weight"}
    assert rows["prompt_template"]["side"] == "input" and rows["lora"]["side"] == "weight"
    assert rows["lora"]["fit_seconds"] > 0 and rows["lora"]["fit_usd"] > 0
    saved = json.loads((tmp_path / "u" / "upgrade.json").read_text())
    assert saved["versions"] == report["versions"]
    md = (tmp_path / "u" / "upgrade.md").read_text()
    assert "| up:1 | production | lora |" in md and "prompt-side recipes" in md


def test_upgrade_with_the_data_files_again(reg, bases, fitted, tmp_path, monkeypatch, capsys):
    reg.push(fitted["lora"], "files")  # no data kept
    with pytest.raises(TailorError, match="keeps no training rows; pass the data"):
        upgrade("files", bases[1], registry=reg, out=tmp_path / "x", on_note=lambda line: None)
    task = sentiment_task(4)
    rows = [{"text": e.input, "label": e.label} for e in task.examples]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    other = write_jsonl(tmp_path / "other.jsonl", rows[:-1])
    monkeypatch.setenv("TAILORLM_REGISTRY", str(reg.root))
    code = main(["upgrade", "files:1", "--base", bases[1], "--train", str(other), "--test",
                 str(train), "--out", str(tmp_path / "y")])
    assert code == 2 and "as files:1 recorded" in capsys.readouterr().err
    code = main(["upgrade", "files:1", "--base", bases[1], "--train", str(train), "--test",
                 str(train), "--alias", "candidate", "--out", str(tmp_path / "z")])
    out = capsys.readouterr().out
    assert code == 0 and "| files:1 | - | lora |" in out
    assert reg.resolve("files@candidate").ref == "files:2"
    assert reg.resolve("files:2").parent == "files:1"
