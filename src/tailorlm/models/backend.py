"""A loaded base model: the torch module, its tokenizer and its identity.

Every method and the engine work on a `Backend`. `identity` is the base model's public name (its hub
id, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`) and `sha256` the hash of the weights actually used,
so an artifact records which base it was made on; `variant` says which form of those weights (a
GGUF's quantization dequantized, or safetensors as published), since the hub id alone claims the
original weights.

Text starts with the tokenizer's BOS token where the tokenizer adds one by default (Gemma's does;
SmolLM2's does not): `bos_ids` is that prefix, and engine/prompt.py puts it before every prompt
and training row, so the model reads what `tokenizer(text)` would give it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class Backend(Protocol):
    """What every backend offers: identity, where it runs, token counts, what a result row says.

        LocalBackend   where="local"    a torch module and its tokenizer, in this process
        RemoteBackend  where="remote"   an OpenAI-compatible endpoint (models/remote.py): text
                                        in, text or log-probabilities out; no weights to bind

    Methods that need weights (`MethodSpec.needs_weights`) refuse a remote backend; the engine
    scores and generates through a remote backend's own tiers (engine/evaluate.py).
    """

    name: str  # what the user asked for: a catalog name, a folder, a hub id or URL#model
    identity: str  # recorded in artifacts: the hub id, or the endpoint's model name
    variant: str  # what was loaded, e.g. "GGUF Q8_0 dequantized to float32"
    sha256: str  # hash of the weights ("" when they are not ours to read: a remote model)
    path: str  # where the model comes from: a local folder or the endpoint URL
    where: str  # "local" | "remote"

    def encode(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def usage_mark(self) -> object: ...

    def describe(self, since: object = None) -> dict: ...


@dataclass
class LocalBackend:
    name: str  # what the user asked for: a catalog name, a folder or a hub id
    identity: str  # the base model's hub id, recorded in artifacts
    sha256: str  # hash of the weight files loaded
    model: torch.nn.Module
    tokenizer: object
    path: str  # the local folder the weights were loaded from
    dtype: torch.dtype = torch.float32
    # Key/values that come before any text: a soft prompt's virtual tokens run through the model,
    # or a prefix-tuning adapter's learned per-layer key/values. Returns (cache for one row, its
    # length in positions); the engine starts every prompt from it. None for a plain model.
    virtual_prefix: Callable[[], tuple[object, int]] | None = None
    # Which form of the weights: "GGUF Q4_1 dequantized to float32", "safetensors bfloat16", ...
    variant: str = ""

    def with_model(self, model: torch.nn.Module) -> "Backend":
        """The same base identity computing with another module (LoRA-wrapped, fine-tuned)."""
        return replace(self, model=model)

    def with_virtual_prefix(self, fn: Callable[[], tuple[object, int]]) -> "Backend":
        return replace(self, virtual_prefix=fn)

    # -- the Backend protocol's remaining parts (the engine asks `where` before scoring) ------
    where: ClassVar[str] = "local"

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def usage_mark(self) -> None:
        return None  # nothing is billed per call locally

    def describe(self, since: object = None) -> dict:
        """What a result row records of the model it ran on."""
        return {"where": self.where, "dtype": str(self.dtype).removeprefix("torch."),
                "device": self.device.type}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added: templates write their own."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @functools.cached_property
    def bos_ids(self) -> list[int]:
        """[BOS id] when the tokenizer puts BOS before text by default, else [].

        Asked of the tokenizer's behaviour, not its `add_bos_token` attribute: Gemma's tokenizer
        reports add_bos_token=False and still adds <bos>.
        """
        tok = self.tokenizer
        bos = getattr(tok, "bos_token_id", None)
        if bos is None:
            return []
        with_special = tok("a")["input_ids"]
        plain = tok("a", add_special_tokens=False)["input_ids"]
        return [bos] if with_special[:1] == [bos] and plain[:1] != [bos] else []

    @property
    def bos_text(self) -> str:
        """The BOS token as text when the tokenizer adds one by default, else ''."""
        return self.tokenizer.bos_token if self.bos_ids else ""
