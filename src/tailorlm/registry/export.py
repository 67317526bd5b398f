"""`export`: a version as a folder the ecosystem loads, every file checked against its digest.

    LoRA, soft prompt, prefix   a PEFT adapter folder (adapter_config.json +
                                adapter_model.safetensors): PeftModel.from_pretrained, vLLM
                                --lora-modules (LoRA), LoRAX
    full fine-tune              a transformers model folder
    --merged (LoRA)             the LoRA merged into its base: a transformers model folder
    text prompts                prompt.json: the template, instruction, demonstrations, labels and
                                their words, and the calibration bias
    hybrid                      the same per part: weight/, fallback/, variants/<value>/

The folder also keeps tailorlm's adapter.json and card.json (PEFT and vLLM ignore files they do not
know), and registry.json: the reference, version and each file's sha256. It is written aside and
renamed into place, so DIR is whole or absent. The adapter's kind is read from its files (a
PEFT config, a model config), never from its method's name.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from tailorlm.errors import TailorError

PEFT_CONFIG = "adapter_config.json"


def export(reg, ref: str, dest: str | Path, *, merged: bool = False) -> Path:
    version = reg.resolve(ref)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TailorError(f"{dest} exists and is not empty; export into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = reg.files(version)
        for rel, digest, _ in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(reg.store.read_bytes(digest))  # read_bytes checks the digest
        folders = sorted({(tmp / rel).parent for rel, _, _ in files
                          if rel == "adapter.json" or rel.endswith("/adapter.json")})
        for folder in folders:
            holds_parts = any(f != folder and folder in f.parents for f in folders)  # a hybrid
            if not holds_parts and not (folder / PEFT_CONFIG).exists() \
                    and not (folder / "config.json").exists():
                write_prompt(folder)
        if merged:
            lora = [f for f in folders if _peft_type(f) == "LORA"]
            if not lora:
                raise TailorError(f"{version.ref} holds no LoRA ({version.method}); --merged "
                                  f"merges a LoRA into its base, export without it")
            for folder in lora:
                merge_lora(folder, version.lineage["base"])
        manifest = {"ref": version.ref, "name": version.name, "version": version.version,
                    "method": version.method, "manifest": version.manifest, "merged": merged,
                    "files": {rel: digest for rel, digest, _ in files}}
        (tmp / "registry.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _peft_type(folder: Path) -> str | None:
    path = folder / PEFT_CONFIG
    return json.loads(path.read_text(encoding="utf-8")).get("peft_type") if path.exists() \
        else None


def write_prompt(folder: Path) -> None:
    """prompt.json beside a text-only adapter's adapter.json: what any client needs to render it."""
    payload = json.loads((folder / "adapter.json").read_text(encoding="utf-8"))
    state = payload.get("state") or {}
    task = state.get("task") or {}
    out = {"method": payload.get("method"), "template": state.get("template"),
           "demonstrations": state.get("demos", []), "labels": task.get("labels"),
           "verbalizer": task.get("verbalizer"), "description": task.get("description"),
           "calibration_log_bias": state.get("bias"),
           "similar_demonstrations": state.get("n_similar", 0),
           "pool": state.get("pool", [])}
    (folder / "prompt.json").write_text(json.dumps(out, indent=2, ensure_ascii=False),
                                        encoding="utf-8")


def merge_lora(folder: Path, base: dict) -> None:
    """Replace a PEFT LoRA folder's adapter files by its base model with the LoRA merged in
    (methods/lora.py's export_merged writes the transformers folder)."""
    from tailorlm.methods.artifact import load_adapter
    from tailorlm.methods.lora import export_merged
    from tailorlm.models import load_backend

    backend = load_backend(base.get("name") or base.get("source"),
                           dtype=base.get("dtype") or "float32")
    if base.get("sha256") and backend.sha256 != base["sha256"]:
        raise TailorError(f"the base model {base.get('name')} now has weights sha256 "
                          f"{backend.sha256[:12]}, not {base['sha256'][:12]} as when the LoRA was "
                          f"fitted: export without --merged")
    merged = export_merged(load_adapter(folder), backend,
                           folder.parent / f".merged-{uuid.uuid4().hex[:8]}")
    for name in (PEFT_CONFIG, "adapter_model.safetensors", "adapter.json"):
        (folder / name).unlink()  # a transformers folder now, no longer an adapter to load
    for path in merged.iterdir():
        os.replace(path, folder / path.name)
    merged.rmdir()
