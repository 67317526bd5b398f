"""The registry's API: versions, references, aliases (CAS, log, rollback), lineage, diff, data,
verify, gc, and a hybrid's parts stored once."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from helpers import sentiment_task
from tailorlm.errors import TailorError
from tailorlm.methods.artifact import load_card, update_card


def copy(folder, tmp_path, name="copy", **card_updates):
    dest = tmp_path / name
    shutil.copytree(folder, dest)
    if card_updates:
        update_card(dest, card_updates)
    return dest


def test_push_resolve_and_load(reg, folders, tmp_path):
    v1 = reg.push(folders["lora"], "router", alias="staging")
    assert (v1.ref, v1.method, v1.aliases) == ("router:1", "lora", ["staging"])
    v2 = reg.push(copy(folders["lora"], tmp_path, metrics={"accuracy": 0.9}), "router")
    assert v2.ref == "router:2"
    assert reg.resolve("router").ref == "router:2"  # NAME is the latest
    assert reg.resolve("router:1").ref == "router:1"
    assert reg.resolve("router@staging").ref == "router:1"
    assert reg.load("router@staging").method == "lora"
    folder = reg.path("router:1")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.json", "adapter_config.json", "adapter_model.safetensors", "card.json"]
    assert folder.name == v1.manifest  # the checkout is named by digest, never by the name
    # the same files again: the existing version, not a new one (and the alias moves to it)
    again = reg.push(folders["lora"], "router", alias="production")
    assert again.ref == "router:1" and again.aliases == ["production", "staging"]
    assert [v.ref for v in reg.versions("router")] == ["router:1", "router:2"]


def test_lineage_from_the_card(reg, folders):
    v = reg.push(folders["soft_prompt"], "sp")
    lin = v.lineage
    assert lin["base"]["identity"] == "test/tiny-llama" and lin["base"]["sha256"] == "0" * 64
    assert lin["base"]["variant"] == "random float32"
    assert lin["data"]["train_sha256"] == sentiment_task(4).fingerprint()
    assert lin["recipe"]["method"] == "soft_prompt" and lin["recipe"]["seed"] == 0
    assert lin["recipe"]["config"]["n_virtual"] == 3
    assert lin["parent"] is None and lin["comparison"] is None
    child = reg.push(folders["prefix"], "sp", parent="sp:1")
    assert child.parent == "sp:1" and child.lineage["parent"] == "sp:1"


def test_versions_are_immutable(reg, folders, tmp_path):
    src = copy(folders["prompt_template"], tmp_path)
    v1 = reg.push(src, "t")
    before = {p: d for p, d, _ in reg.files(v1)}
    update_card(src, {"metrics": {"accuracy": 0.1}})  # the source changes after the push
    reg.push(src, "t")
    assert {p: d for p, d, _ in reg.files("t:1")} == before
    assert load_card(reg.path("t:1")).get("metrics") == {}
    # blobs and checkouts (links to them) are read-only files
    assert (reg.path("t:1") / "card.json").stat().st_mode & 0o222 == 0


def test_alias_compare_and_swap_history_rollback(reg, folders, tmp_path):
    for i in range(3):
        reg.push(copy(folders["prompt_template"], tmp_path, f"c{i}", metrics={"a": i}), "n")
    assert reg.alias("n", "production", 1) == (None, 1)
    assert reg.alias("n", "production", 2, expect=1, reason="better") == (1, 2)
    with pytest.raises(TailorError, match=r"n@production points at 2, not 1 \(--expect 1\)"):
        reg.alias("n", "production", 3, expect=1)
    assert reg.resolve("n@production").version == 2  # the refused move changed nothing
    reg.alias("n", "production", 3)
    assert reg.rollback("n", "production") == (3, 2)
    assert reg.rollback("n", "production") == (2, 1)  # twice: two moves back
    with pytest.raises(TailorError, match="pointed nowhere before"):
        reg.rollback("n", "production")
    log = reg.history("n", "production")
    assert [(e["from_version"], e["to_version"]) for e in log] == [
        (None, 1), (1, 2), (2, 3), (3, 2), (2, 1)]
    assert log[1]["reason"] == "better" and log[1]["user"]
    assert [e["undoes"] for e in log] == [None, None, None, log[2]["id"], log[1]["id"]]
    with pytest.raises(TailorError, match="n:7 does not exist"):
        reg.alias("n", "production", 7)
    with pytest.raises(TailorError, match="has no move to roll back"):
        reg.rollback("n", "staging")


def test_diff_names_what_differs(reg, folders):
    reg.push(folders["lora"], "d")
    reg.push(folders["soft_prompt"], "d")
    rows = {k: (a, b) for k, a, b in reg.diff("d:1", "d:2")}
    assert rows["method"] == ("lora", "soft_prompt")
    assert rows["recipe.method"] == ("lora", "soft_prompt")
    assert "recipe.config.n_virtual" in rows and "base.sha256" not in rows


def test_data_rows_are_kept_by_hash(reg, folders):
    task = sentiment_task(4)
    v = reg.push(folders["lora"], "data", data={"train": task, "test": task})
    kept = reg.data(v)
    assert kept["train"].fingerprint() == task.fingerprint() == v.lineage["data"]["train_sha256"]
    assert kept["test"].labels == task.labels and len(kept["test"]) == len(task)
    # a second version with the same rows stores them once
    n = len(reg.store.all_digests())
    reg.push(folders["soft_prompt"], "data", data={"train": task, "test": task})
    assert len(reg.store.all_digests()) == n + 4  # its own four files; the rows are shared


def test_verify_finds_damage_and_gc_removes_orphans(reg, folders):
    v = reg.push(folders["lora"], "v")
    assert reg.verify()["ok"]
    orphan = reg.store.put_bytes(b"written, never committed")
    (reg.store.tmp / "blob-123-torn").write_bytes(b"half")
    report = reg.verify()
    assert report["ok"] and report["unreferenced_blobs"] == 1
    assert reg.gc() == {"blobs_removed": 1, "bytes_freed": 24 + 4, "unfinished_writes": 1,
                        "checkouts_removed": 0}
    assert not reg.store.has(orphan) and reg.verify()["ok"]
    digest = dict((p, d) for p, d, _ in reg.files(v))["adapter_model.safetensors"]
    blob = reg.store.path(digest)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    report = reg.verify()
    assert not report["ok"] and any("damaged" in p for p in report["problems"])
    blob.unlink()
    assert any("missing" in p for p in reg.verify()["problems"])


def test_gc_waits_for_writes_in_flight(reg, folders):
    import fcntl

    reg.push(folders["prompt_template"], "g")
    with open(reg.root / "write.lock", "a+") as lock:  # a push holds it shared while it writes
        fcntl.flock(lock, fcntl.LOCK_SH)
        with pytest.raises(TailorError, match="a write to the registry is in flight"):
            reg.gc()
    assert reg.gc()["blobs_removed"] == 0


def test_schema_newer_than_this_tailorlm_is_refused(tmp_path):
    from tailorlm.registry import Registry

    Registry(tmp_path / "r").close()
    with sqlite3.connect(tmp_path / "r" / "index.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(TailorError, match="schema version 99, newer than this tailorlm"):
        Registry(tmp_path / "r")


def test_a_hybrids_parts_are_stored_once(reg, tmp_path):
    """Adding a client's soft prompt to a hybrid makes a new version that shares the weight
    side's files (and the other variants') with the old one: only the new part's bytes and the
    two top files are new."""
    from helpers import tiny_backend
    from tailorlm.methods import get_method
    from tailorlm.methods.artifact import save_adapter
    from tailorlm.methods.hybrid import add_variant
    from registry.adapters import FAST, client_task

    backend = tiny_backend()
    spec = get_method("lora+soft_prompt")
    config = spec.config.from_dict({"weight": {**FAST, "r": 8}, "input": {**FAST, "n_virtual": 2},
                                    "variant_field": "client"})
    adapter = spec.fit(backend, client_task(), None, config, seed=0, work_dir=tmp_path / "w")
    folder = save_adapter(adapter, tmp_path / "h", {"base_model_sha256": backend.sha256})
    v1 = reg.push(folder, "hybrid")
    blobs_before = {d: s for _, d, s in reg.files(v1)}
    add_variant(backend, folder, "initech", client_task(("initech",), 4), seed=0)
    v2 = reg.push(folder, "hybrid")
    files1 = {p: d for p, d, _ in reg.files(v1)}
    files2 = {p: d for p, d, _ in reg.files(v2)}
    weight = "weight/adapter_model.safetensors"
    assert files1[weight] == files2[weight]  # the LoRA: one blob for both versions
    shared = {p for p in files1 if files1[p] == files2.get(p)}
    assert {weight, "weight/adapter_config.json", "weight/card.json", "weight/adapter.json",
            "fallback/adapter_model.safetensors", "variants/acme/adapter_model.safetensors",
            "variants/globex/adapter_model.safetensors"} <= shared
    new = {files2[p] for p in files2 if p not in shared} - set(blobs_before)
    assert {p for p in files2 if files2[p] in new} <= {
        "adapter.json", "card.json", "variants/initech/adapter.json",
        "variants/initech/adapter_config.json", "variants/initech/adapter_model.safetensors",
        "variants/initech/card.json"}
    new_bytes = sum(s for _, d, s in reg.files(v2) if d in new)
    assert new_bytes < blobs_before[files1[weight]]  # less than the LoRA weighs
    stored = sum(reg.store.path(d).stat().st_size for d in reg.store.all_digests())
    assert stored == sum(blobs_before.values()) + new_bytes  # nothing stored twice
    assert reg.load("hybrid:2").variants.keys() == {"acme", "globex", "initech"}


def test_export_of_a_text_prompt_is_its_template_and_demonstrations(reg, folders, tmp_path):
    reg.push(folders["prompt_template"], "text")
    dest = reg.export("text", tmp_path / "out")
    prompt = json.loads((dest / "prompt.json").read_text())
    assert prompt["method"] == "prompt_template" and prompt["template"]["name"] == "text_label"
    assert prompt["labels"] == ["negative", "positive"] and prompt["demonstrations"] == []
    files = json.loads((dest / "registry.json").read_text())["files"]
    assert set(files) == {"adapter.json", "card.json"}
    with pytest.raises(TailorError, match="exists and is not empty"):
        reg.export("text", dest)
    with pytest.raises(TailorError, match="holds no LoRA"):
        reg.export("text", tmp_path / "merged", merged=True)
    assert not (tmp_path / "merged").exists()


def test_a_checkout_written_into_is_made_again(reg, folders):
    from tailorlm.methods.artifact import write_json_atomic

    v = reg.push(folders["lora"], "co")
    folder = reg.path(v)
    assert folder.stat().st_mode & 0o222 == 0  # its folders are read-only too
    folder.chmod(0o755)  # as root, or after a chmod: a change no permission stopped
    write_json_atomic(folder / "card.json", {"changed": True})
    (folder / "extra.txt").write_text("x")
    again = reg.path(v)
    assert again == folder and not (again / "extra.txt").exists()
    assert load_card(again) == json.loads(reg.store.read_bytes(
        dict((p, d) for p, d, _ in reg.files(v))["card.json"]))
    assert reg.verify()["ok"]  # the blobs were never touched


def test_register_comparison_says_what_is_missing(reg, tmp_path):
    with pytest.raises(TailorError, match="holds no finished comparison"):
        reg.register_comparison(tmp_path, "x")
    (tmp_path / "results.jsonl").write_text("")
    (tmp_path / "report.json").write_text(json.dumps({"recommendation": {"method": None}}))
    with pytest.raises(TailorError, match="recommends no method"):
        reg.register_comparison(tmp_path, "x")
    with pytest.raises(TailorError, match="name 'X' is not valid"):
        reg.register_comparison(tmp_path, "X")
    assert reg.versions() == []
