"""What one adapter contributes to a served forward pass, declared here so the engine never asks
which method it holds (engine/mixed.py mixes the parts of many adapters in one batch).

    served_parts(adapter, base) -> ServedParts
        prompt(example) -> Prompt        every adapter: the text around the input (engine/prompt.py)
        continuations, labels, adjust    classification: what is scored, and how scores are adjusted
        stop                             generation: the adapter's own stop strings
        virtual(model) -> (cache, n)     soft prompt, prefix: the key/values before any text,
                                         computed through `model` (the LoRA-adapted view for a
                                         lora+soft_prompt hybrid); None for text-only adapters
        lora {module: (A, B, scale)}     LoRA: each adapted linear layer's A (r, in), B (out, r)
                                         and alpha / r; nothing is merged or copied
        model                            a full fine-tune: its own module (the one exception to
                                         "a binding is light")
        variants {value: ServedParts}    a hybrid's per-variant input sides (the fallback is the
                                         parts themselves)

Binding stays light: a LoRA's tensors are read from its PEFT folder (or taken from the fitted PEFT
model in memory) without wrapping the base; a soft prompt's or prefix's key/values come from
`adapter.bind(...)`'s virtual prefix, which computes nothing until called. No module imported here
loads the training loop: the method modules an adapter belongs to are already imported when the
adapter exists, so they are looked up in sys.modules, never imported.

An adapter may declare its own `served_parts(base)`; otherwise the shipped kinds are read below.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tailorlm.data.task import Example
from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError


@dataclass
class ServedParts:
    kind: str  # "classification" | "generation"
    prompt: Callable[[Example], Prompt]
    labels: list[str] | None = None
    continuations: list[str] | None = None
    adjust: Callable[[np.ndarray], np.ndarray] = lambda scores: scores
    stop: tuple[str, ...] = ()
    virtual: Callable[[torch.nn.Module], tuple[object, int]] | None = None
    lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]] | None = None
    model: torch.nn.Module | None = None
    variants: dict[str, "ServedParts"] = field(default_factory=dict)


def base_parts() -> ServedParts:
    """The base model alone: raw text in, text out."""
    return ServedParts(kind="generation", prompt=lambda e: Prompt("", e.input))


def served_parts(adapter, base) -> ServedParts:
    """What `adapter` adds to a forward pass over `base` (a LocalBackend)."""
    own = getattr(adapter, "served_parts", None)
    if own is not None:
        return own(base)
    if _is(adapter, "tailorlm.methods.hybrid", "HybridAdapter"):
        weight = served_parts(adapter.weight, base)
        variants = {v: _on_weight(served_parts(a, base), weight)
                    for v, a in adapter.variants.items()}
        return dataclasses.replace(_on_weight(served_parts(adapter.fallback, base), weight),
                                   variants=variants)
    if _is(adapter, "tailorlm.methods.hybrid", "Stacked"):
        return _on_weight(served_parts(adapter.input, base), served_parts(adapter.weight, base))
    parts = _text_parts(adapter)
    if _is(adapter, "tailorlm.methods.lora", "LoraAdapter"):
        return dataclasses.replace(parts, lora=lora_tensors(adapter, base))
    bound = adapter.bind(base)  # text: the base; prefixes: a lazy virtual prefix; full: its model
    if bound.model is not base.model:
        return dataclasses.replace(parts, model=bound.model.eval())
    if bound.virtual_prefix is not None:
        def virtual(model, _adapter=adapter):
            return _adapter.bind(base.with_model(model)).virtual_prefix()
        return dataclasses.replace(parts, virtual=virtual)
    return parts


def _on_weight(input_parts: ServedParts, weight: ServedParts) -> ServedParts:
    """An input side read over a weight side: the input's text and prefix, the weight's delta."""
    return dataclasses.replace(input_parts, lora=weight.lora, model=weight.model)


def _text_parts(adapter) -> ServedParts:
    task = adapter.task
    if task.kind == "classification":
        return ServedParts(kind="classification", prompt=adapter.prompt, labels=list(task.labels),
                           continuations=list(adapter.continuations(task)),
                           adjust=adapter.adjust, stop=tuple(adapter.stop))
    return ServedParts(kind="generation", prompt=adapter.prompt, stop=tuple(adapter.stop))


def _is(obj, module: str, cls: str) -> bool:
    """isinstance without importing `module` (an adapter's own module is already loaded)."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(obj, getattr(mod, cls))


# -- LoRA tensors --------------------------------------------------------------------------------

PEFT_PREFIX = "base_model.model."  # PEFT's saved names: base_model.model.<module path>.lora_A.weight


def lora_tensors(adapter, base) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{module path in the transformers model: (A (r, in), B (out, r), scale)} of a LoRA adapter,
    in the base's dtype: from the fitted PEFT model in memory, else from its folder."""
    dtype = base.dtype
    peft_model = getattr(adapter, "peft_model", None)
    out = {}
    if peft_model is not None:
        inner = peft_model.base_model.model
        for name, module in inner.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is None or "default" not in lora_a:
                continue
            A = lora_a["default"].weight.detach()
            B = module.lora_B["default"].weight.detach()
            out[name] = (A.to(dtype).clone(), B.to(dtype).clone(),
                         float(module.scaling["default"]))
        return out
    from safetensors.torch import load_file

    folder = Path(adapter.directory)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora") or config.get("alpha_pattern") or config.get("rank_pattern"):
        raise TailorError(f"{folder}: DoRA and per-layer rank/alpha patterns are not served; "
                          f"re-create the adapter with tailorlm")
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    for key, A in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[:-len(".lora_A.weight")].removeprefix(PEFT_PREFIX)
        B = tensors[key.replace(".lora_A.", ".lora_B.")]
        r = A.shape[0]
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        out[name] = (A.to(dtype), B.to(dtype), scale)
    return out
