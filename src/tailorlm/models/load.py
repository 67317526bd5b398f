"""Load a base model as a `Backend`, from a catalog name, a folder, a GGUF file or the hub cache.

    load_backend(name_or_path)
      catalog name ("smollm2-135m")  -> its package's GGUF -> conversion cache -> Backend
      folder with config.json        -> safetensors weights, loaded as they are
      path to a .gguf file           -> conversion cache, keyed by the file's sha256
      anything else                  -> a hub id, from the local Hugging Face cache only

A GGUF is converted once: transformers dequantizes it to float32, and the result is saved as an
ordinary safetensors model folder under `TAILORLM_HOME/models/`. Loading that folder takes a fraction
of a second, against ~15 s to dequantize the GGUF again. A conversion is written into a temporary
sibling folder and renamed into place, and the manifest (`tailorlm-cache.json`) is written last, so a
folder without a complete manifest is a torn conversion and is rebuilt, never used.

The Backend's `variant` says which form of the weights it computes with: "GGUF Q4_1 dequantized to
float32" for a conversion (the quantization read from the GGUF's `general.file_type`, recorded in
the manifest), "safetensors bfloat16" for a model folder (the dtype it was saved in); `dtype` is
what it was loaded as.

Weights are read as safetensors only (`use_safetensors=True`); a folder that holds only pickles is
refused, because unpickling runs code. `trust_remote_code` is never passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import tailorlm
from tailorlm.errors import TailorError
from tailorlm.models.backend import Backend, LocalBackend
from tailorlm.models.catalog import CATALOG, DEFAULT_MODEL
from tailorlm.paths import tailorlm_home

log = logging.getLogger(__name__)

MANIFEST = "tailorlm-cache.json"
DTYPES = ("float32", "bfloat16", "auto")
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}
_STALE_TEMP_S = 24 * 3600  # a temp folder this old is a conversion that died: remove it


def load_backend(name_or_path: str = DEFAULT_MODEL, *, dtype: str = "float32",
                 api: dict | None = None) -> Backend:
    """Load a base model and its tokenizer, in eval mode, on the CPU.

    `dtype` is "float32", "bfloat16", or "auto" (bfloat16 where the hardware computes it natively,
    see `best_dtype`). Raises `TailorError` when the model cannot be found or is refused.
    "URL#MODEL" is an OpenAI-compatible endpoint: a RemoteBackend (models/remote.py), with the
    `api` options (key variable, caps, prices).
    """
    name = str(name_or_path)
    if name.startswith(("http://", "https://")):
        from tailorlm.models.remote import remote_backend

        return remote_backend(name, **(api or {}))
    torch_dtype = _resolve_dtype(dtype)

    if name in CATALOG:
        entry = CATALOG[name]
        folder, filename = entry.locate_gguf()
        dest = tailorlm_home() / "models" / entry.name
        manifest = _converted(Path(folder) / filename, dest, identity=entry.hub_id)
        return _load_folder(name, dest, torch_dtype, identity=manifest["identity"],
                            sha256=manifest["source_sha256"], variant=_gguf_variant(manifest))

    path = Path(name).expanduser()
    if path.is_dir():
        return _load_folder(name, path, torch_dtype)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TailorError(f"{name} is a file but not a .gguf: pass a GGUF file, a model folder "
                              f"with config.json, or a catalog name ({_catalog_names()})")
        sha256 = _sha256_file(path)
        dest = tailorlm_home() / "models" / f"gguf-{sha256[:16]}"
        manifest = _converted(path, dest, identity=_gguf_identity(path), sha256=sha256)
        return _load_folder(name, dest, torch_dtype, identity=manifest["identity"],
                            sha256=manifest["source_sha256"], variant=_gguf_variant(manifest))
    if name.startswith((".", "/", "~")) or name.lower().endswith(".gguf"):
        raise TailorError(f"no such file or folder: {name}")
    return _load_hub_cached(name, torch_dtype)


def best_dtype() -> torch.dtype:
    """bfloat16 where the hardware computes it natively (a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX), else float32: elsewhere bf16 is emulated and slower than fp32."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return torch.bfloat16
    return torch.float32


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to ask, so assume no native bf16
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _resolve_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        return best_dtype()
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    raise TailorError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


# --- loading a safetensors folder ------------------------------------------------------------


def _load_folder(name: str, folder: Path, torch_dtype: torch.dtype, *,
                 identity: str | None = None, sha256: str | None = None,
                 variant: str | None = None) -> Backend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise TailorError(f"{folder} is not a transformers model folder: it has no config.json")
    weights = _weight_files(folder)
    manifest = _read_manifest(folder)
    if manifest is not None and identity is None:  # a conversion cache folder passed as a path
        identity, sha256 = manifest["identity"], manifest["source_sha256"]
        variant = _gguf_variant(manifest)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise TailorError(f"cannot load the model in {folder}: {_first_line(exc)}") from exc
    model.eval()
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; padded positions are masked
    return LocalBackend(
        name=name,
        identity=identity or str(folder.resolve()),
        sha256=sha256 or _sha256_files(weights),
        model=model,
        tokenizer=tokenizer,
        path=str(folder),
        dtype=torch_dtype,
        variant=variant or f"safetensors {_saved_dtype(folder)}",
    )


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers will load from `folder`, or a TailorError."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise TailorError(
            f"{folder} holds its weights only as pickles ({', '.join(pickles)}), and tailorlm loads "
            "safetensors only because unpickling can run code: if you trust the file, re-save it "
            "with transformers' save_pretrained, which writes model.safetensors"
        )
    raise TailorError(f"{folder} has no model.safetensors (or model.safetensors.index.json)")


def _load_hub_cached(hub_id: str, torch_dtype: torch.dtype) -> Backend:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError, OSError) as exc:
        raise TailorError(
            f"model '{hub_id}' not found: it is not a catalog name ({_catalog_names()}), a local "
            "folder or .gguf file, or a model in the local Hugging Face cache, and tailorlm does not "
            f"download (no network); try `{DEFAULT_MODEL}`"
        ) from exc
    return _load_folder(hub_id, folder, torch_dtype, identity=hub_id)


# --- the GGUF conversion cache ---------------------------------------------------------------


def _converted(gguf: Path, dest: Path, *, identity: str, sha256: str | None = None) -> dict:
    """The manifest of a complete conversion of `gguf` at `dest`, converting first if needed.

    The manifest records the GGUF's size and mtime next to its sha256, so an unchanged file is
    recognised without hashing it again; a file whose stat changed is hashed and compared.
    """
    stat = gguf.stat()
    manifest = _read_manifest(dest)
    if manifest is not None and "quantization" not in manifest:  # made before it was recorded
        manifest = dict(manifest, quantization=gguf_quantization(gguf))
        _write_json_atomic(dest / MANIFEST, manifest)
    if manifest is not None:
        if (manifest["source_size"], manifest["source_mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return manifest
        sha256 = sha256 or _sha256_file(gguf)
        if manifest["source_sha256"] == sha256:  # touched or copied, same bytes
            manifest = dict(manifest, source=str(gguf), source_size=stat.st_size,
                            source_mtime_ns=stat.st_mtime_ns)
            _write_json_atomic(dest / MANIFEST, manifest)  # so the next load need not hash it
            return manifest
    sha256 = sha256 or _sha256_file(gguf)
    _convert(gguf, dest, {
        "identity": identity,
        "quantization": gguf_quantization(gguf),
        "source": str(gguf),
        "source_sha256": sha256,
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    })
    manifest = _read_manifest(dest)
    assert manifest is not None, f"conversion into {dest} left no complete manifest"
    return manifest


def _convert(gguf: Path, dest: Path, manifest: dict) -> None:
    """Dequantize `gguf` into a safetensors model folder at `dest`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache it becomes is an ordinary folder
    log.info("converting %s to safetensors in %s (once; later loads reuse it)", gguf, dest)
    started = time.perf_counter()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except (ValueError, KeyError) as exc:  # transformers' words for "can't read this GGUF"
            raise TailorError(f"transformers cannot load {gguf}: {_first_line(exc)}") from exc
        # The weights are already dequantized; what is left of the GGUF quantizer would make
        # save_pretrained refuse to write (or write a config that asks for it again on load).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = dict(
            manifest,
            files={p.name: p.stat().st_size for p in sorted(tmp.iterdir())},
            convert_seconds=round(time.perf_counter() - started, 1),
            tailorlm_version=tailorlm.__version__,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks complete
        if dest.exists():
            shutil.rmtree(dest)  # torn or stale: it never had, or no longer matches, a manifest
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished the same conversion first: keep theirs
            if _read_manifest(dest) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_variant(manifest: dict) -> str:
    quant = manifest.get("quantization") or "(quantization unknown)"
    return f"GGUF {quant} dequantized to float32"


def _saved_dtype(folder: Path) -> str:
    """The dtype a model folder's config says its weights were saved in, else 'float32'."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}  # GGUF value type -> struct format
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_quantization(path: Path) -> str | None:
    """The GGUF's quantization as llama.cpp names it ("Q4_1", "Q4_K_M", "F16"), from the header's
    `general.file_type`, or None where the header does not say.

    Only the header is read, up to that key: gguf's GGUFReader parses every field first, which
    for Gemma's 262k-token vocabulary takes ~17 s.
    """
    import struct

    import gguf

    def read(fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, f.read(size))[0]

    def skip(kind):
        if kind == _GGUF_STRING:
            f.seek(read("<Q"), 1)
        elif kind == _GGUF_ARRAY:
            item, count = read("<I"), read("<Q")
            if item in _GGUF_SCALARS:
                f.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
            else:
                for _ in range(count):
                    skip(item)
        else:
            f.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            read("<I")  # version
            read("<Q")  # tensor count
            for _ in range(read("<Q")):
                key = f.read(read("<Q")).decode("utf-8", "replace")
                kind = read("<I")
                if key == "general.file_type" and kind in _GGUF_SCALARS:
                    name = gguf.LlamaFileType(read(_GGUF_SCALARS[kind])).name
                    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
                skip(kind)
    except (OSError, struct.error, ValueError, KeyError):
        return None
    return None


def _read_manifest(folder: Path) -> dict | None:
    """The folder's manifest if the folder is a complete conversion, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        complete = all((folder / n).is_file() and (folder / n).stat().st_size == size
                       for n, size in files.items())
        keys = {"identity", "source_sha256", "source_size", "source_mtime_ns"}
        return manifest if complete and keys <= manifest.keys() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _remove_stale_temps(dest: Path) -> None:
    for tmp in dest.parent.glob(f".{dest.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _gguf_identity(path: Path) -> str:
    """The hub repo the GGUF says it was made from, else its file name."""
    import gguf

    try:
        fields = gguf.GGUFReader(path).fields
    except (ValueError, OSError) as exc:
        raise TailorError(f"{path} is not a readable GGUF file: {_first_line(exc)}") from exc
    for key in ("general.source.repo_url", "general.base_model.0.repo_url", "general.repo_url"):
        if key in fields:
            url = str(fields[key].contents())
            prefix = "https://huggingface.co/"
            return url.removeprefix(prefix) if url.startswith(prefix) else url
    return path.name


# --- small helpers ---------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    # A file in the Hugging Face cache is a link to a blob named by its sha256: no need to read it.
    real = path.resolve()
    if real.parent.name == "blobs" and len(real.name) == 64 and set(real.name) <= set("0123456789abcdef"):
        return real.name
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _sha256_files(paths: list[Path]) -> str:
    """One file: its sha256. Shards: the sha256 of their `sha256sum`-style listing."""
    if len(paths) == 1:
        return _sha256_file(paths[0])
    listing = "".join(f"{_sha256_file(p)}  {p.name}\n" for p in sorted(paths))
    return hashlib.sha256(listing.encode()).hexdigest()


def _catalog_names() -> str:
    return ", ".join(CATALOG)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
