"""A loaded base model: the torch module, its tokenizer and its identity.

Every method and the engine work on a `Backend`. `identity` is the base model's public name (its hub
id, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`) and `sha256` the hash of the weights actually used,
so an artifact records which base it was made on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch


@dataclass
class Backend:
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

    def with_model(self, model: torch.nn.Module) -> "Backend":
        """The same base identity computing with another module (LoRA-wrapped, fine-tuned)."""
        return replace(self, model=model)

    def with_virtual_prefix(self, fn: Callable[[], tuple[object, int]]) -> "Backend":
        return replace(self, virtual_prefix=fn)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added: templates write their own."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def bos_text(self) -> str:
        """The BOS token as text when the tokenizer adds one by default, else ''."""
        tok = self.tokenizer
        if getattr(tok, "bos_token", None) and getattr(tok, "add_bos_token", False):
            return tok.bos_token
        return ""
